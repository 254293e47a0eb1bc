"""Background processes of the local services and the Airflow stack (one supervisor).

A process is started in its own session (process group) with stdout+stderr appended to a log
file, and described by an *entry* (a JSON-able dict, kept in a state file)::

    {"pid": 123, "pgid": 123, "start": "<start time in clock ticks>", "cmd": [...], "log": "..."}

``why_dead(entry)`` tells whether that process still runs and is the one that was started
(the start time and, optionally, the command line guard against pid reuse); ``stop(entry)``
sends SIGTERM to the group, SIGKILL after a grace period (and to whatever is left in the
group). State files are written atomically, mode 0600, under an exclusive ``flock``
(``locked``). ``wait_for`` polls a health check until it passes, the process dies or a
deadline passes. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from slicert_ops.errors import ServiceError

Entry = dict[str, Any]
Check = Callable[[], tuple[bool, str]]

# Popen objects of the children started by *this* process, so they are reaped (no zombies
# when a test kills one with SIGKILL and restarts it).
_CHILDREN: dict[int, subprocess.Popen] = {}


class ProcessExited(ServiceError):
    """The process died while ``wait_for`` waited for it (``reason`` says how)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WaitTimeout(ServiceError):
    """``wait_for`` passed its deadline (``detail``: the last answer of the check)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"not ready before the deadline ({detail})")
        self.detail = detail


# ------------------------------------------------------------------------------ /proc
def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces ("" when unknown)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """Start time of the process (clock ticks after boot, as text), None when gone."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


# ------------------------------------------------------------------------------ processes
def spawn(cmd: list[str], *, log: Path, env: Mapping[str, str] | None = None,
          cwd: str | Path | None = None) -> Entry:
    """Start cmd in a new session, output appended to log (after a header line)."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: "
                 f"{shlex.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=None if env is None else dict(env),
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    return {"pid": proc.pid, "pgid": proc.pid, "start": start_time(proc.pid), "cmd": cmd,
            "log": str(log)}


def _reaped(pid: int) -> str | None:
    """Collect the exit status of our child pid if it has exited (no zombie stays)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        code = proc.poll()
        if code is None:
            return None
        _CHILDREN.pop(pid, None)
        return f"exited (status {code})"
    with contextlib.suppress(ChildProcessError, OSError):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return f"exited (wait status {status})"
    return None


def why_dead(entry: Mapping[str, Any], owns: Callable[[str], bool] | None = None) -> str | None:
    """None while the recorded process runs and is the one that was started, else why not.

    ``owns(cmdline)`` (optional) must accept the process's command line; the recorded start
    time (when the entry has one) must match, so a reused pid is never taken for ours.
    """
    pid = int(entry.get("pid") or 0)
    if pid <= 0:
        return "no pid"
    reaped = _reaped(pid)
    if reaped:
        return reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "no such process"
    except PermissionError:
        pass
    if entry.get("start") and start_time(pid) != entry["start"]:
        return "pid reused by another process"
    fields = _stat_fields(pid)
    if fields and fields[0] == "Z":  # a zombie is dead for our purposes
        return "exited (zombie)"
    if owns is not None:
        cmd = cmdline(pid)
        if not owns(cmd):
            return f"pid runs something else: {cmd[:80]!r}"
    return None


def alive(entry: Mapping[str, Any], owns: Callable[[str], bool] | None = None) -> bool:
    return why_dead(entry, owns) is None


def reap(pid: int, timeout: float = 5.0) -> None:
    """Wait (at most timeout) for our child pid to be gone, collecting its exit status."""
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            return  # not our child (or already collected)
        if done == pid or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(entry: Mapping[str, Any], grace: float,
         owns: Callable[[str], bool] | None = None) -> str:
    """SIGTERM to the process group, SIGKILL after grace seconds and to whatever is left in the
    group (workers, task subprocesses). Returns "not running", "stopped" or "killed (...)"."""
    if not alive(entry, owns):
        return "not running"
    pid, pgid = int(entry["pid"]), int(entry.get("pgid") or entry["pid"])
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(entry):
        time.sleep(0.1)
    how = "stopped" if not alive(entry) else f"killed (no exit {grace:.0f} s after SIGTERM)"
    _killpg(pgid, signal.SIGKILL)
    reap(pid)
    return how


def kill(entry: Mapping[str, Any], timeout: float = 10.0) -> None:
    """SIGKILL the process group at once (fault injection) and reap the process."""
    pid = int(entry["pid"])
    _killpg(int(entry.get("pgid") or pid), signal.SIGKILL)
    reap(pid, timeout)


# ------------------------------------------------------------------------------ state files
@contextlib.contextmanager
def locked(directory: Path, *, busy: str | None = None) -> Iterator[None]:
    """Exclusive flock on <directory>/.lock. With busy (a message) a held lock raises
    ServiceError(busy) at once; without, it waits."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            raise ServiceError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(path: Path) -> dict[str, Any]:
    """The JSON object in path, {} when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: Path, data: Mapping[str, Any]) -> None:
    """Write data as JSON, atomically (rename), mode 0600 (state may hold secrets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=1) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ logs, ports
def tail(path: Path, lines: int = 20, indent: str = "") -> str:
    """The last lines of a log file, each indented ("(no log)" when unreadable)."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(indent + ln for ln in text[-lines:])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (SO_REUSEADDR, like the servers themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_owner(port: int) -> str:
    """Best effort: which program listens on the port (from `ss`), for error messages."""
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=3).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    if "users:((" in out:
        return out.split("users:((", 1)[1].split(")", 1)[0]
    return ""


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> tuple[bool, str]:
    """A check for wait_for: something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, "ok"
    except OSError as exc:
        return False, f"{host}:{port}: {exc}"


def wait_for(check: Check, *, deadline: float, dead: Callable[[], str | None] | None = None,
             interval: float = 0.25) -> float:
    """Poll check() -> (ok, detail) until ok; returns the seconds it took.

    Before each check, dead() (optional) says whether the process died: its reason is raised
    as ProcessExited at once. WaitTimeout(last detail) once time.monotonic() passes deadline.
    """
    t0 = time.monotonic()
    while True:
        reason = dead() if dead is not None else None
        if reason:
            raise ProcessExited(reason)
        ok, detail = check()
        if ok:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise WaitTimeout(detail)
        time.sleep(interval)


def protocol_emitter() -> Callable[..., None]:
    """A worker process's JSON-lines protocol on its original stdout (``emit(ev, **kw)``,
    thread-safe); anything else the process prints goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    lock = threading.Lock()

    def emit(ev: str, **kw: Any) -> None:
        line = json.dumps({"ev": ev, **kw}, default=str)
        with lock:
            proto.write(line + "\n")
            proto.flush()

    return emit
