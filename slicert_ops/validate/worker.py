"""The validation process of a sweep: ``python -m slicert_ops.validate.worker [BATCH [WAIT]]``.

Started by ``stage.ValidationStage`` when the validation server (``--serve``, below; see
``validate.server``) cannot be. Imports GX at once (while the sweep measures), then
validates the run folders it is handed in batches -- ``BATCH`` runs, or what is queued
``WAIT`` seconds after the first of a batch, or at once after a flush -- with one GX call
per suite (gx_runner.validate_runs writes validation.json / .html into each folder). Runs at
a lower CPU priority (``SLICERT_VALIDATION_NICE``, default 5).

Protocol, JSON lines. Parent -> worker (stdin): {"op": "run", "dir"} | {"op": "flush"}
(validate what is queued now, and every later run at once) | {"op": "exit"} (stop now).
Worker -> parent (stdout): {"ev": "verdict", "dir", "verdict": Verdict.to_dict()} |
{"ev": "error", "message", "dirs"} (the runs of a batch that raised get no verdict here: the
parent validates them itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from slicert_ops.procs import protocol_emitter
from slicert_ops.validate.server import idle_timeout

NICE = 5


class _Queue:
    def __init__(self, batch_size: int, max_wait_s: float) -> None:
        self.batch_size, self.max_wait_s = batch_size, max_wait_s
        self.cond = threading.Condition()
        self.items: list[Path] = []
        self.first = 0.0
        self.flushing = False
        self.closed = False

    def close(self) -> None:
        """No more batches: take() returns [] (the validation server's client left)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def put(self, d: Path) -> None:
        with self.cond:
            if not self.items:
                self.first = time.monotonic()
            self.items.append(d)
            self.cond.notify_all()

    def flush(self) -> None:
        with self.cond:
            self.flushing = True
            self.cond.notify_all()

    def take(self) -> list[Path]:
        with self.cond:
            while True:
                if self.closed:
                    return []
                waited = time.monotonic() - self.first
                if self.items and (self.flushing or len(self.items) >= self.batch_size
                                   or waited >= self.max_wait_s):
                    batch, self.items = self.items[:256], self.items[256:]
                    self.first = time.monotonic()
                    return batch
                self.cond.wait(timeout=max(0.05, self.max_wait_s - waited)
                               if self.items else None)


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2:])
    emit = protocol_emitter()

    try:
        os.nice(max(0, int(os.environ.get("SLICERT_VALIDATION_NICE", NICE))))
    except (OSError, ValueError):
        pass
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    max_wait_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    queue = _Queue(max(1, batch_size), max_wait_s)

    def validate_loop() -> None:
        from slicert_ops.validate.gx_runner import gx_context
        from slicert_ops.validate.stage import validate_runs

        try:
            gx_context()  # ~5 s: while the first runs are measured
        except Exception as exc:  # noqa: BLE001 - shows again with the first batch
            emit("error", message=f"GX failed to load: {exc}")
        while True:
            batch = queue.take()
            _emit_verdicts(batch, emit, lambda b=batch: validate_runs(b, reuse=False))

    threading.Thread(target=validate_loop, name="slicert-validate", daemon=True).start()
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "run":
            queue.put(Path(msg["dir"]))
        elif op == "flush":
            queue.flush()
        elif op == "exit":
            break
    # exit (or the parent is gone): what is left is validated by the parent, or later
    sys.stderr.flush()
    os._exit(0)  # skip the teardown of GX, pandas and friends


def _emit_verdicts(batch: list[Path], emit: Any, validate: Any) -> None:
    """Validate one batch (``validate()``) and emit a verdict per run, or one error naming
    the batch's runs: the client (the sweep) validates those itself."""
    from slicert_ops.validate.stage import Verdict

    try:
        verdicts = validate()
    except Exception as exc:  # noqa: BLE001 - the client validates these itself
        emit("error", dirs=[str(d) for d in batch],
             message=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
        return
    for d, v in zip(batch, verdicts, strict=True):
        emit("verdict", dir=str(d), verdict=Verdict.to_dict(v))


# ------------------------------------------------------------------- the validation server
class _Server:
    def __init__(self, path: Path, idle_s: float) -> None:
        self.path, self.idle_s = path, idle_s
        self.lock = threading.Lock()
        self.run_lock = threading.Lock()  # one batch at a time (chdir, GX)
        self.active = 0
        self.last = time.monotonic()

    def touch(self, delta: int = 0) -> None:
        with self.lock:
            self.active += delta
            self.last = time.monotonic()

    def watchdog(self, srv: socket.socket, inode: int) -> None:
        while True:
            time.sleep(min(1.0, self.idle_s / 4))
            with self.lock:
                idle = self.active == 0 and time.monotonic() - self.last > self.idle_s
            if idle:
                with contextlib.suppress(OSError):
                    if os.stat(self.path).st_ino == inode:
                        self.path.unlink()  # ours still: no new client finds a dead socket
                os._exit(0)

    def handle(self, conn: socket.socket) -> None:
        """One client (counted active from its accept(): serve's loop)."""
        rfile = conn.makefile("r", encoding="utf-8")
        wfile = conn.makefile("w", encoding="utf-8")
        wlock = threading.Lock()

        def emit(ev: str, **kw: Any) -> None:
            line = json.dumps({"ev": ev, **kw}, default=str)
            with wlock, contextlib.suppress(OSError, ValueError):
                wfile.write(line + "\n")
                wfile.flush()

        queue: _Queue | None = None
        # the client's folder comes with its hello; not ours: a previous client's folder
        # this server chdir'd into may be gone (os.getcwd() then raises)
        cwd = "/"
        worker: threading.Thread | None = None
        try:
            for line in rfile:
                self.touch()
                msg = json.loads(line)
                op = msg.get("op")
                if op == "hello":
                    cwd = str(msg.get("cwd") or cwd)
                    queue = _Queue(max(1, int(msg.get("batch_size") or 16)),
                                   float(msg.get("max_wait_s") or 10.0))
                    worker = threading.Thread(target=self.validate_loop,
                                              args=(queue, cwd, emit), daemon=True)
                    worker.start()
                elif queue is None:
                    emit("error", message="no hello", dirs=[msg["dir"]] if "dir" in msg
                         else [])
                elif op == "run":
                    queue.put(Path(msg["dir"]))
                elif op == "flush":
                    queue.flush()
                elif op == "exit":
                    break
        except (OSError, ValueError):
            pass
        except Exception:  # noqa: BLE001 - never leave a client waiting on a dead handler
            traceback.print_exc()
        finally:
            if queue is not None:
                queue.close()
            if worker is not None:
                worker.join()
            with contextlib.suppress(OSError):
                conn.close()
            self.touch(-1)

    def validate_loop(self, queue: Any, cwd: str, emit: Any) -> None:
        from slicert_ops.validate.stage import validate_runs

        def in_client_folder(batch: list[Path]) -> Any:
            with self.run_lock:
                os.chdir(cwd)
                return validate_runs(batch, reuse=False)

        while True:
            batch = queue.take()
            if not batch:
                return  # the client left: what it did not wait for is its own
            _emit_verdicts(batch, emit, lambda b=batch: in_client_folder(b))
            self.touch()


def _warm() -> None:
    from slicert_ops.validate.gx_runner import gx_context

    try:
        gx_context()
    except Exception:  # noqa: BLE001 - shows again with the first batch
        traceback.print_exc()


def serve(argv: list[str]) -> int:
    """The validation server on the socket argv[0] (``--detach``: in a session of its own,
    its starter not waiting for it)."""
    path = Path(argv[0])
    if "--detach" in argv:
        if os.fork():
            os._exit(0)  # the starter waits for this one only: no zombie, no terminal
        os.setsid()
    path = path.absolute()
    os.chdir("/")  # holds no folder busy; each batch runs in its client's folder
    with contextlib.suppress(OSError, ValueError):
        os.nice(max(0, int(os.environ.get("SLICERT_VALIDATION_NICE", NICE))))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(str(path))
    except OSError as exc:
        print(f"slicert validation server: cannot bind {path}: {exc}", file=sys.stderr)
        return 1
    os.chmod(path, 0o600)
    srv.listen(16)
    server = _Server(path, idle_timeout())
    threading.Thread(target=server.watchdog, args=(srv, os.stat(path).st_ino),
                     daemon=True).start()
    threading.Thread(target=_warm, daemon=True).start()
    while True:
        conn, _ = srv.accept()
        server.touch(+1)  # at once: the idle watchdog never ends a server with a client
        threading.Thread(target=server.handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
