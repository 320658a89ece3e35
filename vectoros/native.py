"""The monitor's hot path compiled to C with mypyc, when it has been built (``make native``).

The modules in ``MODULES`` (the deal state and its codec, the fused rule pass, the lifecycle,
the insight texts, the partition state, decoding, the changelog) are plain, strictly typed
Python. The rule modules of ``consumer/rules/catalog/`` are not compiled: their thresholds are
pydantic models, which mypyc does not compile. ``python -m
vectoros.native build`` compiles them with mypyc (the compiler mypy is built with; mypy and
setuptools come with the dev lock, gcc and the Python headers with the machine) into
``.native/`` at the repository root, never beside the sources: a build that no longer matches
them cannot shadow an edited source.

``activate`` (called once, by ``consumer/__init__.py``, before any of them is imported) puts a
finder first on ``sys.meta_path`` that loads those modules from the build, but only when the
build is *fresh*: its manifest's digest of every ``*.py`` file of ``consumer/``, ``schemas/`` and
``vectoros/`` (what mypyc read to compile them) equals the digest of today's files, and it was
built for this interpreter (``EXT_SUFFIX``). Otherwise, and with ``VECTOROS_NATIVE=0``, the
sources are imported as usual: same behaviour, more CPU per record. ``status()``
says which, and why; the monitor logs it at start-up and the bench prints it.

The compiled modules need nothing at run time but CPython (not mypy, not mypyc's ``librt``).
mypyc checks the declared types at run time, so a value of the wrong type raises ``TypeError``
where Python would have carried on; the whole test suite runs on the build (``make test``), and
the pure core's unit tests once more on the sources.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

MODULES = (
    "consumer.state",
    "consumer.deal_codec",
    "consumer.lifecycle",
    "consumer.rules.fused",
    "consumer.templates",
    "consumer.partition",
    "consumer.decode",
    "consumer.changelog",
)
"""What is compiled: the monitor's per-record path, which does no I/O."""

GROUP = "vectoros_native"
"""mypyc's name for the one shared library the modules are compiled into (``GROUP__mypyc``)."""

SOURCE_PACKAGES = ("consumer", "schemas", "vectoros")
"""Whose ``*.py`` files the freshness digest covers: what mypyc reads to compile ``MODULES``."""

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".native"
MANIFEST = "manifest.json"
ENV_SWITCH = "VECTOROS_NATIVE"

_status: str | None = None


def source_digest(root: Path = ROOT) -> str:
    """sha256 over the relative path and bytes of every source file the build depends on."""
    h = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def _ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or "")


def check(root: Path = ROOT, build_dir: Path | None = None) -> tuple[dict[str, Path], str]:
    """The compiled files by module name (empty when they are not to be used) and why."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in {"0", "false", "no", "off"}:
        return {}, f"Python source ({ENV_SWITCH}=0)"
    build_dir = BUILD_DIR if build_dir is None else build_dir
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return {}, "Python source (not compiled: make native)"
    except (OSError, ValueError) as exc:
        return {}, f"Python source (unreadable {build_dir / MANIFEST}: {exc})"
    if not isinstance(manifest, dict) or manifest.get("ext_suffix") != _ext_suffix():
        return {}, "Python source (compiled for another interpreter: make native)"
    if manifest.get("digest") != source_digest(root):
        return {}, "Python source (the sources changed since they were compiled: make native)"
    files: dict[str, Path] = {}
    for name in (*MODULES, f"{GROUP}__mypyc"):
        path = build_dir.joinpath(*name.split(".")).with_name(
            name.rpartition(".")[2] + _ext_suffix()
        )
        if not path.is_file():
            return {}, f"Python source ({path} is missing: make native)"
        files[name] = path
    return files, "compiled (mypyc)"


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Loads exactly the compiled modules (and their shared library) from the build."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def activate() -> str:
    """Use the compiled modules from now on if the build is fresh (once per process); returns
    ``status()``. Must run before any of ``MODULES`` is imported."""
    global _status
    if _status is None:
        files, _status = check()
        if files:
            already = [m for m in MODULES if m in sys.modules]
            if already:  # importing them again would give two copies of their classes
                _status = f"Python source ({', '.join(already)} imported before activate)"
            else:
                sys.meta_path.insert(0, _CompiledFinder(files))
    return _status


def status() -> str:
    """``compiled (mypyc)``, or ``Python source (why)``."""
    return activate()


def build(root: Path = ROOT, build_dir: Path | None = None) -> int:
    """Compile ``MODULES`` into ``build_dir`` (replaced only when the build succeeds)."""
    build_dir = BUILD_DIR if build_dir is None else build_dir
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(str(compiler).split()[0]) is None:
        print(f"native: no C compiler ({compiler}); the pure core runs as Python", file=sys.stderr)
        return 1
    try:
        from mypyc.build import mypycify
        from setuptools import setup  # type: ignore[import-untyped]
    except ImportError as exc:  # a runtime-only install (requirements.lock)
        print(f"native: {exc.name} is not installed (make venv); nothing compiled", file=sys.stderr)
        return 1
    digest = source_digest(root)
    work = build_dir.with_name(build_dir.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    sources = [str(root.joinpath(*m.split(".")).with_suffix(".py")) for m in MODULES]
    cwd = Path.cwd()
    os.chdir(root)  # mypyc reads the mypy settings of pyproject.toml from here
    try:
        extensions = mypycify(sources, opt_level="3", group_name=GROUP, target_dir=str(work / "c"))
        setup(
            name=GROUP,
            ext_modules=extensions,
            script_args=[
                "--quiet",
                "build_ext",
                "--build-lib",
                str(work / "lib"),
                "--build-temp",
                str(work / "tmp"),
            ],
        )
    finally:
        os.chdir(cwd)
    if source_digest(root) != digest:
        print("native: the sources changed while compiling; run it again", file=sys.stderr)
        return 1
    lib = work / "lib"
    (lib / MANIFEST).write_text(
        json.dumps({"digest": digest, "ext_suffix": _ext_suffix(), "modules": list(MODULES)})
    )
    shutil.rmtree(build_dir, ignore_errors=True)
    lib.rename(build_dir)
    shutil.rmtree(work, ignore_errors=True)
    print(f"native: {len(MODULES)} modules compiled into {build_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["build"]:
        return build()
    if args == ["status"]:
        print(status())
        return 0
    print("usage: python -m vectoros.native build|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
