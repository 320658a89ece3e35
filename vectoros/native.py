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

``python -m vectoros.native ensure`` (what ``make native`` runs) builds only when the build is
not fresh by that same test (file times do not matter: a deleted or restored source counts),
exits 3 when this machine cannot build (no C compiler, no Python headers, no mypyc, or its C
compiler fails: the sources run), and 1 when mypyc rejects the code, which ``make`` reports.
Builds are serialised by a lock file, so two ``make`` runs at once cannot mix their files.

The compiled modules need nothing at run time but CPython (not mypy, not mypyc's ``librt``).
mypyc checks the declared types at run time, so a value of the wrong type raises ``TypeError``
where Python would have carried on; the whole test suite runs on the build (``make test``), and
the pure core's unit tests once more on the sources.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator, Sequence
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
CANNOT_BUILD = 3
"""``build``'s exit status when this machine cannot compile (no C compiler, no Python headers,
no mypyc, or its C compiler fails)."""

_status: str | None = None


def source_digest(root: Path = ROOT) -> str:
    """sha256 over the relative path and bytes of every source file the build depends on (what
    Python imports: regular files not under a dot-name, so an editor's lock file is not one)."""
    h = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if not path.is_file():
                continue
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
    return _fresh(root, BUILD_DIR if build_dir is None else build_dir)


def _fresh(root: Path, build_dir: Path) -> tuple[dict[str, Path], str]:
    """``check`` without the switch: whether the build matches the sources and this
    interpreter."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return {}, "Python source (not compiled: make native)"
    except (OSError, ValueError) as exc:
        return {}, f"Python source (unreadable {build_dir / MANIFEST}: {exc})"
    if not isinstance(manifest, dict) or manifest.get("ext_suffix") != _ext_suffix():
        return {}, "Python source (compiled for another interpreter: make native)"
    try:
        digest = source_digest(root)
    except OSError as exc:  # a source that vanished while it was read, say: never fail an import
        return {}, f"Python source (the build could not be checked: {exc})"
    if manifest.get("digest") != digest:
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


def ensure(root: Path = ROOT, build_dir: Path | None = None) -> int:
    """Build unless the build is fresh (``check``'s test, whatever ``VECTOROS_NATIVE`` says)."""
    build_dir = BUILD_DIR if build_dir is None else build_dir
    with _build_lock(build_dir):
        files, why = _fresh(root, build_dir)
        if files:
            return 0
        print(f"native: {why}; compiling", file=sys.stderr)
        return _build(root, build_dir)


def build(root: Path = ROOT, build_dir: Path | None = None) -> int:
    """Compile ``MODULES`` into ``build_dir`` (replaced only when the build succeeds); 0 when
    built, ``CANNOT_BUILD`` when this machine cannot, 1 when mypyc rejects the code."""
    build_dir = BUILD_DIR if build_dir is None else build_dir
    with _build_lock(build_dir):
        return _build(root, build_dir)


@contextlib.contextmanager
def _build_lock(build_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``<build_dir>.lock``: one build at a time."""
    fd = os.open(build_dir.with_name(build_dir.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _build(root: Path, build_dir: Path) -> int:
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(str(compiler).split()[0]) is None:
        print(f"native: no C compiler ({compiler}); the pure core runs as Python", file=sys.stderr)
        return CANNOT_BUILD
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if not headers.is_file():
        print(f"native: no {headers} (python3-dev); the pure core runs as Python", file=sys.stderr)
        return CANNOT_BUILD
    try:
        from mypyc.build import mypycify
        from setuptools import setup  # type: ignore[import-untyped]
    except ImportError as exc:  # a runtime-only install (requirements.lock)
        print(f"native: {exc.name} is not installed (make venv); nothing compiled", file=sys.stderr)
        return CANNOT_BUILD
    digest = source_digest(root)
    work = build_dir.with_name(build_dir.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    sources = [str(root.joinpath(*m.split(".")).with_suffix(".py")) for m in MODULES]
    cwd = Path.cwd()
    os.chdir(root)  # mypyc reads the mypy settings of pyproject.toml from here
    try:
        try:
            extensions = mypycify(
                sources, opt_level="3", group_name=GROUP, target_dir=str(work / "c")
            )
        except SystemExit:  # mypyc rejected the code: its errors are above
            print("native: mypyc rejected the code (above); nothing compiled", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
            return 1
        try:
            setup(
                name=GROUP,
                ext_modules=extensions,
                script_args=[
                    "--quiet",
                    "build_ext",
                    "--force",
                    "--build-lib",
                    str(work / "lib"),
                    "--build-temp",
                    str(work / "tmp"),
                ],
            )
        except SystemExit as exc:  # the C toolchain failed: this machine's, not the code's
            print(
                f"native: the C compiler failed ({exc}); the pure core runs as Python",
                file=sys.stderr,
            )
            shutil.rmtree(work, ignore_errors=True)
            return CANNOT_BUILD
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
    if args == ["ensure"]:
        return ensure()
    if args == ["status"]:
        print(status())
        return 0
    print("usage: python -m vectoros.native build|ensure|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
