"""The long-lived validation server (validate/server.py, worker.serve): GX imported once for
many sweeps, the same verdicts and validation.json as the per-sweep validation process, an
idle timeout that leaves nothing behind, and the fallback when it cannot start. Real GX."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.synthetic_runs import write_sweep

from slicert_ops.validate import server
from slicert_ops.validate.stage import ValidationStage

pytestmark = pytest.mark.integration


@pytest.fixture()
def short_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private, short $TMPDIR (AF_UNIX paths are short) and a 2 s idle timeout (tmp_path
    first: pytest's own temporary folder stays where it is)."""
    d = tempfile.mkdtemp(prefix="svs", dir="/tmp")
    monkeypatch.setenv("TMPDIR", d)
    monkeypatch.setattr(tempfile, "tempdir", d)
    monkeypatch.setenv(server.IDLE_ENV, "2")
    monkeypatch.delenv(server.SERVER_ENV, raising=False)
    yield Path(d)
    path = server.socket_path()
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:  # the server's idle exit
        time.sleep(0.2)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    return write_sweep(tmp_path / "results", "vsrv", tile_sizes=(8, 16), micro_tiles=(1,),
                       unrolls=(1, 2), slices=(32,), repeat=1)


def server_pid(path: Path) -> int:
    """The pid of the process listening on the server's socket (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET,
                                                          socket.SO_PEERCRED, 12))
    return pid


def validate(dirs: list[Path]) -> tuple[ValidationStage, dict[str, dict]]:
    stage = ValidationStage(batch_size=2, max_wait_s=0.5)
    for d in dirs:
        (d / "validation.json").unlink(missing_ok=True)
        stage(SimpleNamespace(reused=False), d)
    verdicts = stage.close()
    assert set(verdicts) == set(dirs)
    reports = {}
    for d in dirs:
        report = json.loads((d / "validation.json").read_text())
        assert report["success"] == verdicts[d].success
        report.pop("validated_at")  # timing: when, how long, in which batch
        report["statistics"].pop("seconds")
        report["statistics"].pop("batch_runs")
        for suite in report["suites"].values():
            suite.get("meta", {}).pop("batch", None)
        reports[d.name] = report
    return stage, reports


def test_server_validates_as_the_sweep_process_and_is_reused(short_tmp, runs, monkeypatch):
    first, by_server = validate(runs)
    assert first._sock is not None and first._proc is None
    path = server.socket_path()
    assert path.exists() and path.parent == short_tmp
    inode, pid = path.stat().st_ino, server_pid(path)
    second, again = validate(runs)
    # the same server process (GX already imported there), not a new one
    assert second._sock is not None and path.stat().st_ino == inode
    assert server_pid(path) == pid != os.getpid()
    assert again == by_server
    monkeypatch.setenv(server.SERVER_ENV, "0")  # the per-sweep process, as before
    third, by_process = validate(runs)
    assert third._sock is None and third._proc is not None
    assert by_process == by_server


def test_relative_run_folders_are_reported_as_named(short_tmp, runs, monkeypatch):
    monkeypatch.chdir(runs[0].parent)
    rel = [Path(d.name) for d in runs[:2]]
    stage, reports = validate(rel)
    assert stage._sock is not None
    assert {r["run_dir"] for r in reports.values()} == {"run_0001", "run_0002"}


def test_idle_server_exits(short_tmp, runs):
    validate(runs[:1])
    path = server.socket_path()
    assert path.exists()
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not path.exists()
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))


def test_falls_back_when_the_server_cannot_start(short_tmp, runs, monkeypatch):
    monkeypatch.setattr(server, "connect", lambda *a, **k: None)
    stage, reports = validate(runs[:2])
    assert stage._sock is None and stage._proc is not None
    assert set(reports) == {"run_0001", "run_0002"}
    assert not any(p.suffix == ".sock" for p in short_tmp.iterdir())


def test_a_stale_socket_is_replaced(short_tmp, runs):
    path = server.socket_path()
    with socket.socket(socket.AF_UNIX) as s:  # bound, never listening: a dead server's
        s.bind(str(path))
    assert path.exists()
    stage, _ = validate(runs[:1])
    assert stage._sock is not None and os.path.exists(path)


def test_a_client_whose_folder_is_gone_does_not_break_the_next(short_tmp, runs, monkeypatch,
                                                              tmp_path):
    """The server chdirs into each client's folder; once that folder is deleted (a finished
    test's, a removed checkout's), the next client is still served (it used to find a dead
    handler and wait forever)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    first, _ = validate(runs[:1])
    assert first._sock is not None
    monkeypatch.chdir(tmp_path)
    gone.rmdir()
    second, reports = validate(runs[1:3])
    assert second._sock is not None and set(reports) == {r.name for r in runs[1:3]}
    assert not second._orphans  # the server answered: nothing fell back to this process
