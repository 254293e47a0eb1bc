"""slicert_ops.procs: process groups with a log, locked state files, stop with grace then
SIGKILL, waiting for health (real processes, no services)."""

from __future__ import annotations

import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from slicert_ops import procs
from slicert_ops.errors import ServiceError

# A parent that starts a grandchild in its group, prints both pids, then sleeps; with
# "ignore" it ignores SIGTERM (so only SIGKILL stops it).
_PROGRAM = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "60"])
print("ready", os.getpid(), child.pid, flush=True)
time.sleep(60)
"""


def _start(tmp_path: Path, mode: str) -> tuple[dict, int]:
    log = tmp_path / "logs" / f"{mode}.log"
    entry = procs.spawn([sys.executable, "-c", _PROGRAM, mode], log=log, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("ready "):
                _, pid, child = line.split()
                assert int(pid) == entry["pid"]
                return entry, int(child)
        time.sleep(0.05)
    raise AssertionError(f"no ready line in {log}:\n{log.read_text()}")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.why_dead({"pid": pid}) is not None:
            return True
        time.sleep(0.05)
    return False


def test_spawn_state_file_and_stop_with_grace(tmp_path):
    entry, child = _start(tmp_path, "plain")
    assert entry["pgid"] == entry["pid"] and entry["start"]
    assert Path(entry["log"]).read_text().startswith("\n==== ")
    assert "starting: " in Path(entry["log"]).read_text()
    assert procs.why_dead(entry) is None
    assert procs.alive(entry, owns=lambda cmd: "import os, signal" in cmd)
    assert "something else" in procs.why_dead(entry, owns=lambda cmd: "nginx" in cmd)
    assert procs.why_dead({**entry, "start": "1"}) == "pid reused by another process"

    state = tmp_path / "run" / "svc.pid"
    with procs.locked(tmp_path):
        procs.write_state(state, entry)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert procs.read_state(state) == entry
    assert [p.name for p in state.parent.iterdir()] == ["svc.pid"]  # no temp file left

    assert procs.stop(procs.read_state(state), grace=20) == "stopped"
    assert procs.why_dead(entry) is not None
    assert _gone(child), "the grandchild in the group survived"
    assert procs.stop(entry, grace=1) == "not running"


def test_stop_kills_after_grace_when_sigterm_is_ignored(tmp_path):
    entry, child = _start(tmp_path, "ignore")
    t0 = time.monotonic()
    how = procs.stop(entry, grace=1.0)
    assert how.startswith("killed"), how
    assert 0.9 < time.monotonic() - t0 < 15
    assert not procs.alive(entry)
    assert _gone(child)


def test_kill_and_wait_for(tmp_path):
    entry, _ = _start(tmp_path, "plain")
    with pytest.raises(procs.WaitTimeout) as info:
        procs.wait_for(lambda: (False, "still booting"), deadline=time.monotonic() + 0.3,
                       dead=lambda: procs.why_dead(entry), interval=0.05)
    assert info.value.detail == "still booting"
    procs.kill(entry)
    with pytest.raises(procs.ProcessExited) as died:
        procs.wait_for(lambda: (False, "x"), deadline=time.monotonic() + 30,
                       dead=lambda: procs.why_dead(entry), interval=0.05)
    assert "exited" in died.value.reason or "no such process" in died.value.reason
    assert isinstance(died.value, ServiceError)


def test_ports_lock_and_tail(tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert not procs.port_free(port)
        assert procs.wait_for(lambda: procs.port_open(port), deadline=time.monotonic() + 5) < 5
    assert procs.port_free(port)
    assert procs.port_open(port)[0] is False

    with procs.locked(tmp_path, busy="busy here"):
        with pytest.raises(ServiceError, match="busy here"):
            with procs.locked(tmp_path, busy="busy here"):
                pass
    with procs.locked(tmp_path, busy="free again"):
        pass

    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert procs.tail(log, 2, indent="  ") == "  line 28\n  line 29"
    assert procs.tail(tmp_path / "missing.log") == "(no log)"
    assert procs.read_state(tmp_path / "missing.json") == {}
