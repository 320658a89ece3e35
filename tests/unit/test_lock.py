"""requirements.lock pins every dependency pyproject.toml names, at a version it allows, with
hashes: a fresh clone installs exactly what CI tested (`make venv`), and `make lock` is the only
way the pins move."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def _pins(lock: str = "requirements-dev.lock") -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from a lock file."""
    pins: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in (ROOT / lock).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def _declared(runtime_only: bool = False) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra, more in project["optional-dependencies"].items():
        if not runtime_only or extra == "build":
            names.extend(more)
    return [Requirement(name) for name in names]


def test_every_declared_dependency_is_pinned_at_an_allowed_version() -> None:
    pins = _pins()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in the lock: run make lock"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"lock pins {req.name}=={version}, pyproject.toml wants {req.specifier}: run make lock"
        )


def test_the_runtime_lock_pins_the_services_dependencies_at_the_same_versions() -> None:
    runtime, dev = _pins("requirements.lock"), _pins()
    for req in _declared(runtime_only=True):
        assert canonicalize_name(req.name) in runtime, f"{req.name} missing: run make lock"
    for name, (version, _) in runtime.items():
        assert dev[name][0] == version, f"{name}: the two locks disagree; run make lock"
    assert "pytest" not in runtime  # test tools stay out of the image


def test_every_pin_carries_hashes() -> None:
    pins = _pins()
    assert len(pins) > len(_declared())  # transitive dependencies are pinned too
    for name, (version, hashes) in pins.items():
        assert hashes >= 1, f"{name}=={version} has no --hash: pip --require-hashes would refuse"


def test_make_venv_installs_from_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes" in makefile
    assert "-r $(LOCK)" in makefile
    assert "LOCK := requirements-dev.lock" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "requirements.lock" in dockerfile
