"""The compiled pure core (``vectoros/native.py``): a build is used only while it matches the
sources and this interpreter, ``VECTOROS_NATIVE=0`` turns it off, and the compiled modules need
nothing of mypy at run time."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from vectoros import native

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make test`` runs these once more with ``VECTOROS_NATIVE=0``: each test sets it itself."""
    monkeypatch.delenv("VECTOROS_NATIVE", raising=False)


def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A source tree and a build of it that ``check`` accepts."""
    root, build = tmp_path / "src", tmp_path / "build"
    for package in native.SOURCE_PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f"# {package}\n")
    (root / "consumer" / "partition.py").write_text("x = 1\n")
    suffix = native._ext_suffix()
    for name in (*native.MODULES, f"{native.GROUP}__mypyc"):
        parts = name.split(".")
        path = build.joinpath(*parts[:-1], parts[-1] + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    manifest = {"digest": native.source_digest(root), "ext_suffix": suffix}
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    return root, build


def test_a_build_matching_the_sources_is_used(tmp_path: Path) -> None:
    root, build = tree(tmp_path)
    files, why = native.check(root, build)
    assert why == "compiled (mypyc)"
    assert set(files) == {*native.MODULES, f"{native.GROUP}__mypyc"}
    assert files["consumer.rules.fused"].parent == build / "consumer" / "rules"


def test_a_changed_source_makes_the_build_stale(tmp_path: Path) -> None:
    root, build = tree(tmp_path)
    (root / "consumer" / "partition.py").write_text("x = 2\n")
    assert native.check(root, build) == (
        {},
        "Python source (the sources changed since they were compiled: make native)",
    )


def test_a_new_source_file_makes_the_build_stale(tmp_path: Path) -> None:
    root, build = tree(tmp_path)
    (root / "schemas" / "extra.py").write_text("")
    assert native.check(root, build)[0] == {}


def test_a_build_for_another_interpreter_is_not_used(tmp_path: Path) -> None:
    root, build = tree(tmp_path)
    manifest = json.loads((build / native.MANIFEST).read_text())
    manifest["ext_suffix"] = ".cpython-399-x86_64-linux-gnu.so"
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    assert native.check(root, build) == (
        {},
        "Python source (compiled for another interpreter: make native)",
    )


def test_no_build_a_missing_file_or_a_bad_manifest(tmp_path: Path) -> None:
    root, build = tree(tmp_path)
    next(build.rglob("fused*")).unlink()
    files, why = native.check(root, build)
    assert files == {}
    assert "fused" in why
    assert why.endswith("is missing: make native)")
    (build / native.MANIFEST).write_text("{not json")
    assert native.check(root, build)[1].startswith("Python source (unreadable ")
    (build / native.MANIFEST).unlink()
    assert native.check(root, build) == ({}, "Python source (not compiled: make native)")


def test_the_switch_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, build = tree(tmp_path)
    monkeypatch.setenv("VECTOROS_NATIVE", "0")
    assert native.check(root, build) == ({}, "Python source (VECTOROS_NATIVE=0)")


def test_an_editors_lock_file_or_a_dangling_link_is_not_a_source(tmp_path: Path) -> None:
    root, build = tree(tmp_path)
    (root / "consumer" / ".#partition.py").symlink_to(tmp_path / "nowhere")
    (root / "consumer" / "gone.py").symlink_to(tmp_path / "nowhere")
    (root / "vectoros" / ".hidden").mkdir()
    (root / "vectoros" / ".hidden" / "x.py").write_text("")
    assert native.check(root, build)[1] == "compiled (mypyc)"


def test_a_source_that_cannot_be_read_means_the_sources_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, build = tree(tmp_path)

    def vanished(root: Path = ROOT) -> str:
        raise FileNotFoundError(2, "No such file or directory", "consumer/x.py")

    monkeypatch.setattr(native, "source_digest", vanished)
    files, why = native.check(root, build)
    assert files == {}
    assert why.startswith("Python source (the build could not be checked: ")


def test_ensure_compiles_only_a_build_that_is_not_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, build = tree(tmp_path)
    calls: list[Path] = []

    def fake_build(root: Path, build_dir: Path) -> int:
        calls.append(build_dir)
        return 0

    monkeypatch.setattr(native, "_build", fake_build)
    monkeypatch.setenv("VECTOROS_NATIVE", "0")  # whether it is used does not matter here
    assert native.ensure(root, build) == 0
    assert calls == []
    (root / "consumer" / "partition.py").unlink()  # a deletion: no file time says so
    assert native.ensure(root, build) == 0
    assert calls == [build]
    assert (tmp_path / "build.lock").exists()


def test_no_c_compiler_exits_3_the_one_status_make_tolerates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, build = tree(tmp_path)
    (root / "consumer" / "partition.py").write_text("x = 2\n")
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: "no-such-cc-here")
    assert native.ensure(root, build) == native.CANNOT_BUILD
    assert "no C compiler (no-such-cc-here)" in capsys.readouterr().err
    result = subprocess.run(
        ["make", "-s", "-n", "native"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "|| [ $? -eq 3 ]" in result.stdout  # make tolerates exactly that status


def test_no_python_headers_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, build = tree(tmp_path)
    (root / "consumer" / "partition.py").write_text("x = 2\n")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    assert native.ensure(root, build) == native.CANNOT_BUILD
    assert "Python.h (python3-dev); the pure core runs as Python" in capsys.readouterr().err


def test_make_test_reruns_the_unit_tests_of_every_compiled_module() -> None:
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"CORE_TESTS = \$\(shell grep -l -E '([^']+)'", makefile)
    assert found is not None
    for module in native.MODULES:
        assert re.search(found.group(1), module), module


def test_modules_imported_before_activate_keep_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumer.partition  # noqa: F401  (imported, as in any process that reached here)

    root, build = tree(tmp_path)
    real = native.check
    monkeypatch.setattr(native, "check", lambda: real(root, build))
    monkeypatch.setattr(native, "_status", None)
    finders = list(sys.meta_path)
    assert native.activate().startswith("Python source (consumer.state, ")
    assert sys.meta_path == finders


PROBE = """
import sys, importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"mypy", "mypyc", "librt", "mypy_extensions", "setuptools"}:
            raise ImportError(f"{name} must not be needed at run time")
        return None
sys.meta_path.insert(0, Refuse())
import consumer.partition, consumer.rules.fused
from vectoros import native
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig
from schemas.events import event_adapter
event = event_adapter.validate_json(
    b'{"schema_version":1,"type":"deal.created","event_id":"e-1","workspace_id":"w",'
    b'"deal_id":"d-1","occurred_at":"2026-01-05T08:00:00Z","title":"T","value":100000,'
    b'"currency":"USD","stage":"proposal","probability":5,"owner_id":"u",'
    b'"close_date":"2026-03-01"}'
)
step = PartitionState(RulesConfig()).apply(event)
print(native.status())
print(consumer.partition.__file__)
print(consumer.rules.fused.__file__)
print(sorted(i.rule for i in step.insights))
"""


def probe(switch: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "VECTOROS_NATIVE"}
    if switch is not None:
        env["VECTOROS_NATIVE"] = switch
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_process_uses_the_build_exactly_when_it_is_fresh() -> None:
    """In a fresh process, with mypy, mypyc and their runtime refused: the compiled modules (or,
    without a fresh build, the sources) load and raise the same insight."""
    on = probe(None)
    off = probe("0")
    suffix = native._ext_suffix()
    compiled = native.check()[1] == "compiled (mypyc)"
    assert on[0] == native.check()[1]
    assert on[1].endswith(suffix) is compiled
    assert on[2].endswith(suffix) is compiled
    if compiled:
        assert Path(on[1]).is_relative_to(native.BUILD_DIR)
    assert off[0] == "Python source (VECTOROS_NATIVE=0)"
    assert off[1] == str(ROOT / "consumer" / "partition.py")
    assert on[3] == off[3]
    assert "low_probability" in on[3]


def test_this_test_session_runs_on_the_build_when_it_is_fresh() -> None:
    import consumer.deal_codec

    compiled = native.status() == "compiled (mypyc)"
    assert consumer.deal_codec.__file__ is not None
    assert consumer.deal_codec.__file__.endswith(native._ext_suffix()) is compiled
