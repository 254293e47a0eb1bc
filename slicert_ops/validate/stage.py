"""The validation stage: a verdict (``validation.json``) in every run folder.

Every finished run of a sweep gets one -- tracked or not, failed runs too (a failed run fails
its preflight checks, named in the verdict, without calling GX) -- written into the
published run folder atomically (temporary file + rename, the way ``.tracked`` is): the
measured files are never touched, and a folder is never seen with half a verdict.

    verdict = validate_run(run_dir)           # reuses validation.json when it is there
    verdict.success, verdict.failed_expectations, verdict.to_dict()

``ValidationStage`` is the sweep's sink (``sweep.run_sweep`` adds one unless a sink already
is one, e.g. the tracking's): runs are handed over as they finish and validated outside the
sweep's process (GX is seconds of CPU-heavy Python; in the sweep's process it would take the
GIL from the measuring), in batches with one GX call per suite; ``wait()`` returns once
every run has its verdict. Reused runs keep the verdict they have (read back, not
recomputed); only a missing one is computed. The validating process is the long-lived
validation server (``validate.server``: GX imported once, not once per sweep), started on
demand; when it cannot be, a process of the sweep's own (``python -m
slicert_ops.validate.worker``); when that dies, the sweep's process itself.

This module imports neither GX nor pandas (the tracking reads verdicts through it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.validate import server

log = logging.getLogger(__name__)

VERDICT_FILE = "validation.json"   # the full report (gx_runner.REPORT_JSON)
REPORT_HTML = "validation.html"
BATCH_SIZE = 16      # runs per GX call (one call costs ~0.6 s, nearly whatever its size)
MAX_WAIT_S = 10.0    # a batch is validated at the latest this long after its first run
# no verdict this long after the last exchange: the validator is stuck, the sweep validates
# the rest itself (a batch takes ~0.6 s, loading GX ~5 s)
STALL_S = float(os.environ.get("SLICERT_VALIDATION_STALL_S", "300"))

VerdictListener = Callable[[Path, "Verdict", bool], None]  # (run_dir, verdict, reused)


@dataclass(frozen=True)
class Verdict:
    """One run folder's validation outcome (the head of its validation.json)."""

    run_dir: Path
    success: bool
    failed_expectations: tuple[str, ...] = ()
    statistics: dict[str, Any] = field(default_factory=dict)
    report_json: Path | None = None
    report_html: Path | None = None

    @property
    def reasons(self) -> list[str]:
        """Why the run is not valid ("suite/name" or "preflight/what: why"); empty if valid."""
        return list(self.failed_expectations)

    def summary(self, limit: int = 5) -> str:
        if self.success:
            return "validation passed"
        more = len(self.failed_expectations) - limit
        names = ", ".join(self.failed_expectations[:limit])
        return f"validation failed: {names}" + (f" (+{more} more)" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "success": self.success,
                "failed_expectations": list(self.failed_expectations),
                "statistics": dict(self.statistics),
                "report_json": str(self.report_json) if self.report_json else None,
                "report_html": str(self.report_html) if self.report_html else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        def path(key: str) -> Path | None:
            return Path(data[key]) if data.get(key) else None

        return cls(Path(data["run_dir"]), bool(data.get("success")),
                   tuple(str(f) for f in data.get("failed_expectations") or ()),
                   dict(data.get("statistics") or {}), path("report_json"),
                   path("report_html"))

    @classmethod
    def of(cls, run_dir: Path | str, result: Any) -> Verdict:
        """A Verdict from anything shaped like one (gx_runner.ValidationResult)."""
        if isinstance(result, Verdict):
            return result
        return cls(Path(run_dir), bool(result.success),
                   tuple(getattr(result, "failed_expectations", None) or ()),
                   dict(getattr(result, "statistics", None) or {}),
                   getattr(result, "report_json", None), getattr(result, "report_html", None))


def read_verdict(run_dir: Path | str) -> Verdict | None:
    """The verdict in run_dir/validation.json; None when it is missing or unreadable."""
    run_dir = Path(run_dir)
    path = run_dir / VERDICT_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        return None
    html = run_dir / REPORT_HTML
    return Verdict(run_dir, data["success"],
                   tuple(str(f) for f in data.get("failed_expectations") or ()),
                   dict(data.get("statistics") or {}), path,
                   html if html.is_file() else None)


def validate_runs(run_dirs: Sequence[Path | str], *, reuse: bool = True) -> list[Verdict]:
    """The verdict of each run folder, in order: read back from validation.json (``reuse``),
    else computed (one GX call per suite for all of them) and written into the folder."""
    dirs = [Path(d) for d in run_dirs]
    out: list[Verdict | None] = [read_verdict(d) if reuse else None for d in dirs]
    todo = [i for i, v in enumerate(out) if v is None]
    if todo:
        from slicert_ops.validate.gx_runner import validate_runs as gx_validate_runs

        for i, res in zip(todo, gx_validate_runs([dirs[i] for i in todo]), strict=True):
            out[i] = Verdict.of(dirs[i], res)
    return out  # type: ignore[return-value]


def validate_run(run_dir: Path | str, *, reuse: bool = True) -> Verdict:
    """``validate_runs`` of one folder."""
    return validate_runs([run_dir], reuse=reuse)[0]


class ValidationStage:
    """The sweep's validation sink: ``stage(outcome, run_dir)`` for every finished run;
    ``wait()`` -> every verdict; ``close()`` waits and stops the validation process.

    ``listeners`` are called with (run_dir, verdict, reused) as each verdict arrives (from a
    reader thread, or from the caller's thread for a reused run's verdict)."""

    def __init__(self, listeners: Iterable[VerdictListener] = (), *,
                 batch_size: int = BATCH_SIZE, max_wait_s: float = MAX_WAIT_S) -> None:
        self.listeners = list(listeners)
        self.batch_size, self.max_wait_s = max(1, batch_size), max_wait_s
        self.verdicts: dict[Path, Verdict] = {}
        self.seconds_waited = 0.0     # time the sweep spent in wait() (the stage's overhead)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._pending: dict[str, bool] = {}   # run dir -> reused
        self._orphans: set[str] = set()       # the process failed them: validated here
        self._proc: subprocess.Popen[str] | None = None   # the per-sweep worker, or
        self._sock: Any = None                            # the validation server
        self._rfile: Any = None
        self._wfile: Any = None
        self._started = False
        self._reader: threading.Thread | None = None
        self._exited = False
        self._progress = time.monotonic()   # the last run handed over or verdict received

    # ------------------------------------------------------------------ the sweep's side
    def __call__(self, outcome: Any, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if not (run_dir / "manifest.json").is_file():
            return
        reused = bool(getattr(outcome, "reused", False))
        if reused:
            verdict = read_verdict(run_dir)
            if verdict is not None:  # read back, not recomputed
                self._deliver(run_dir, verdict, reused=True)
                return
        with self._cond:
            self._pending[str(run_dir)] = reused
            self._progress = time.monotonic()
        if not self._send(op="run", dir=str(run_dir)):
            with self._cond:
                self._cond.notify_all()  # the process is gone: wait() validates it here

    def warm(self) -> None:
        """Start the validation process now (GX loads while the sweep measures)."""
        self._start()

    def wait(self, timeout_s: float | None = None) -> dict[Path, Verdict]:
        """Block until every run handed over has its verdict; returns all verdicts. Runs the
        process could not validate (it died) are validated in this process."""
        t0 = time.monotonic()
        with self._cond:
            busy = bool(self._pending)
        if busy:
            self._send(op="flush")
            with self._cond:
                self._progress = time.monotonic()
                while set(self._pending) - self._orphans and not self._exited:
                    if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                        break
                    if time.monotonic() - self._progress > STALL_S:
                        # no verdict for that long: a stuck validator must not hang the
                        # sweep; what it has not answered is validated here
                        log.warning("the validation process sent nothing for %.0f s: "
                                    "validating the rest in this process", STALL_S)
                        self._orphans.update(self._pending)
                        break
                    self._cond.wait(timeout=1.0)
                left = list(self._pending.items())
            if left and (self._exited or set(self._pending) <= self._orphans):
                log.warning("validating %d run(s) in this process (the validation process "
                            "could not)", len(left))
                for (d, reused), verdict in zip(
                        left, validate_runs([Path(d) for d, _ in left]), strict=True):
                    self._deliver(Path(d), verdict, reused)
        self.seconds_waited += time.monotonic() - t0
        return dict(self.verdicts)

    def close(self, *, wait: bool = True) -> dict[Path, Verdict]:
        """Wait for the verdicts (unless ``wait`` is False: an interrupted sweep), then stop
        the validation process."""
        try:
            if wait:
                self.wait()
        finally:
            self._stop()
        return dict(self.verdicts)

    # ------------------------------------------------------------------ the process
    def _start(self) -> bool:
        with self._send_lock:
            if self._started:
                return not self._exited
            self._started = True
            sock = None
            if server.enabled():
                sock = server.connect()
            if sock is not None:
                self._sock = sock
                self._rfile = sock.makefile("r", encoding="utf-8")
                self._wfile = sock.makefile("w", encoding="utf-8")
                self._wfile.write(json.dumps({
                    "op": "hello", "cwd": os.getcwd(), "batch_size": self.batch_size,
                    "max_wait_s": self.max_wait_s}) + "\n")
                self._wfile.flush()
            else:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "slicert_ops.validate.worker",
                     str(self.batch_size), str(self.max_wait_s)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
                self._rfile, self._wfile = self._proc.stdout, self._proc.stdin
        self._reader = threading.Thread(target=self._read, name="slicert-validation-reader",
                                        daemon=True)
        self._reader.start()
        return True

    def _send(self, **msg: Any) -> bool:
        if not self._start():
            return False
        with self._send_lock:
            try:
                assert self._wfile is not None
                self._wfile.write(json.dumps(msg) + "\n")
                self._wfile.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def _lines(self) -> Iterator[str]:
        try:
            yield from self._rfile
        except (OSError, ValueError):  # the connection closed under the reader
            return

    def _read(self) -> None:
        assert self._rfile is not None
        for line in self._lines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ev") == "verdict":
                d = str(ev["dir"])
                with self._cond:
                    reused = self._pending.get(d, False)
                self._deliver(Path(d), Verdict.from_dict(ev["verdict"]), reused)
            elif ev.get("ev") == "error":
                log.warning("validation process: %s", ev.get("message"))
                with self._cond:
                    self._orphans.update(str(d) for d in ev.get("dirs") or ())
                    self._cond.notify_all()
        if self._proc is not None:
            self._proc.wait()
        with self._cond:
            self._exited = True
            self._cond.notify_all()

    def _deliver(self, run_dir: Path, verdict: Verdict, reused: bool) -> None:
        for listener in self.listeners:
            try:
                listener(run_dir, verdict, reused)
            except Exception:  # noqa: BLE001 - a listener never loses a verdict
                log.exception("validation listener failed for %s", run_dir)
        with self._cond:
            self.verdicts[run_dir] = verdict
            self._pending.pop(str(run_dir), None)
            self._progress = time.monotonic()
            self._cond.notify_all()

    def _stop(self) -> None:
        if not self._started:
            return
        proc = self._proc
        self._send(op="exit")
        try:
            if self._wfile is not None:
                self._wfile.close()
        except OSError:
            pass
        if self._sock is not None:  # the server stays (for the next sweep); we leave
            import socket

            for close in (lambda: self._sock.shutdown(socket.SHUT_RDWR), self._sock.close):
                try:
                    close()
                except OSError:
                    pass
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
