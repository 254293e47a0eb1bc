"""A long-lived validation server: GX is imported once per machine and code version, not
once per sweep (``python -m slicert_ops.validate.worker --serve SOCKET [--detach]``; this
module is its client side and names, ``worker.serve`` the server).

``ValidationStage`` connects to it (``connect()``: started on demand, detached, when it is
not running) over a Unix socket under ``$TMPDIR`` named by a key of the code
(every ``slicert_ops`` source file's size and mtime), the interpreter and the expectations
folder: another checkout or another version never shares a server. The server binds at
once, loads GX in the background, and exits after ``$SLICERT_VALIDATION_IDLE_S`` seconds
(default 600) without a client. When it cannot be started, the stage falls back to a
validation process of its own (``validate.worker``), and that to validating in-process.
``SLICERT_VALIDATION_SERVER=0`` turns the server off.

Per connection the protocol is the worker's (JSON lines, see ``validate.worker``), after a
first ``{"op": "hello", "cwd", "batch_size", "max_wait_s"}``: each connection has its own
queue and batches; batches of all connections are validated one at a time, in the
client's working directory (relative run folders are reported as the client named them:
validation.json is the same as the per-sweep process writes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDLE_ENV = "SLICERT_VALIDATION_IDLE_S"
SERVER_ENV = "SLICERT_VALIDATION_SERVER"
DEFAULT_IDLE_S = 600.0
START_TIMEOUT_S = 15.0


def enabled() -> bool:
    return os.environ.get(SERVER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def idle_timeout() -> float:
    try:
        return max(0.5, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def server_key() -> str:
    """What a server must share with its clients: the code, the interpreter, the suites."""
    from slicert_ops.paths import repo_root

    pkg = Path(__file__).resolve().parents[1]
    suites = os.environ.get("SLICERT_EXPECTATIONS_DIR") or str(repo_root() / "expectations")
    h = hashlib.sha256(f"{sys.executable}\0{pkg}\0{Path(suites).resolve()}".encode())
    for path in sorted(pkg.rglob("*.py")):
        try:
            st = path.stat()
        except OSError:
            continue
        h.update(f"{path.relative_to(pkg)}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def socket_path() -> Path:
    return Path(tempfile.gettempdir()) / f"slicert-validate-{os.getuid()}-{server_key()}.sock"


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


def connect(timeout_s: float = START_TIMEOUT_S) -> socket.socket | None:
    """A connection to the validation server, started (detached) when none answers; None
    when it cannot be started (the caller validates another way)."""
    try:
        path = socket_path()
        if len(str(path)) > 100:  # AF_UNIX path limit
            return None
        try:
            return _connect(path)
        except OSError:
            pass
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts it; the others connect
            try:
                return _connect(path)
            except OSError:
                pass
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket (its server is gone)
            log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
            try:
                subprocess.run([sys.executable, "-m", "slicert_ops.validate.worker", "--serve",
                                str(path), "--detach"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                               timeout=timeout_s, check=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
            finally:
                log.close()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    return _connect(path)
                except OSError:
                    time.sleep(0.02)
    except (OSError, subprocess.SubprocessError):
        return None
    return None
