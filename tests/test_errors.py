"""What a user sees when the disk is full or --out cannot be written, and on huge manifests.

The full disk is real: a tiny tmpfs mounted in a private user + mount namespace
(`unshare --user --map-root-user --mount`, no privileges needed), filled up, under a real
`slicert run`; the same namespace gives a read-only file system.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.synthetic_runs import write_sweep

from slicert_ops import cli
from slicert_ops.report.index import build_index, write_index

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "experiments" / "conv2d_5x5.yaml"
ONE = ["--set", "experiment.parameters.tile_size=[8]", "--set",
       "experiment.parameters.unroll=[1]", "--set", "experiment.parameters.slice=[32]",
       "--no-progress"]


def _one_clear_line(stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("slicert: error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_enospc_anywhere_in_a_run_is_one_line_exit_1(monkeypatch, capsys, tmp_path):
    """Simulated: a write deep in the pipeline fails with ENOSPC and no file name."""
    from slicert_ops import commands_run

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commands_run, "_cmd_run", full)
    assert cli.main(["run", str(MANIFEST), "--out", str(tmp_path / "r")]) == 1
    _one_clear_line(capsys.readouterr().err, f"under {tmp_path / 'r'}",
                    "No space left on device", "file system is full")


def test_other_os_errors_are_not_disguised(monkeypatch, tmp_path):
    from slicert_ops import commands_run

    def bug(args):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(commands_run, "_cmd_run", bug)
    with pytest.raises(OSError, match="Bad file descriptor"):
        cli.main(["run", str(MANIFEST), "--out", str(tmp_path / "r")])


def test_out_under_a_file_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["run", str(MANIFEST), "--out", str(blocker / "results"), *ONE]) == 1
    _one_clear_line(capsys.readouterr().err, str(blocker / "results"), "Not a directory")


NAMESPACE = textwrap.dedent("""
    set -uf
    cd "$WORK"
    slicert() { "$PY" -m slicert_ops.cli "$@"; }
    mkdir -p full ro
    mount -t tmpfs -o size=32m tmpfs full
    # 1. one run fits
    slicert run "$MANIFEST" --out full $ONE --set experiment.repeat=1 >out1 2>err1; echo $? >rc1
    find full/conv2d_5x5_latency/run_0001 -type f -exec sha256sum {} + | sort >sum1
    # 2. fill the disk, ask for a second repeat
    dd if=/dev/zero of=full/filler bs=64k 2>/dev/null
    slicert run "$MANIFEST" --out full $ONE --set experiment.repeat=2 >out2 2>err2; echo $? >rc2
    find full/conv2d_5x5_latency/run_0001 -type f -exec sha256sum {} + | sort >sum2
    ls -a full/conv2d_5x5_latency >ls2
    # 3. space again: the next run completes and removes the partial folder
    rm full/filler
    slicert run "$MANIFEST" --out full $ONE --set experiment.repeat=2 >out3 2>err3; echo $? >rc3
    ls -a full/conv2d_5x5_latency >ls3
    # 4. a read-only file system
    mount -t tmpfs -o size=1m,ro tmpfs ro
    slicert run "$MANIFEST" --out ro/results $ONE --set experiment.repeat=1 >out4 2>err4
    echo $? >rc4
""")


def test_real_full_disk_and_read_only_out(tmp_path):
    env = {"WORK": str(tmp_path), "PY": sys.executable, "MANIFEST": str(MANIFEST),
           "ONE": " ".join(ONE),
           "PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "",
           "SLICERT_VALIDATION_IDLE_S": os.environ.get("SLICERT_VALIDATION_IDLE_S", "5")}
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           NAMESPACE], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    read = lambda name: (tmp_path / name).read_text()  # noqa: E731
    assert read("rc1").strip() == "0", read("err1")
    assert read("rc2").strip() == "1", read("err2")
    _one_clear_line(read("err2"), "No space left on device", str(tmp_path / "full"))
    assert "cycles.txt" in read("sum1") and "qemu_trace.json" in read("sum1")
    assert read("sum1") == read("sum2")  # the published run is intact
    assert read("rc3").strip() == "0", read("err3")
    listing = read("ls3").split()
    assert "run_0001" in listing and "run_0002" in listing
    assert not [n for n in listing if ".tmp-" in n], listing  # partial folders cleaned
    assert read("rc4").strip() == "1", read("err4")
    _one_clear_line(read("err4"), str(tmp_path / "ro" / "results"),
                    "Read-only file system")


def test_huge_manifest_warns_with_an_estimate_from_measured_costs(tmp_path, capsys):
    out = tmp_path / "results"
    write_sweep(out, "conv2d_5x5_latency", limit=4, repeat=2)
    write_index(out / "conv2d_5x5_latency", out / "conv2d_5x5_latency" / "index.parquet",
                df=build_index(out))
    argv = ["check", str(MANIFEST), "--out", str(out), "--set", "experiment.repeat=5555556"]
    assert cli.main(argv) == 0  # a warning, not a refusal
    captured = capsys.readouterr()
    assert "100000008 runs" in captured.out
    warning = captured.err
    assert "warning: 100,000,008 runs" in warning and "estimated" in warning
    assert f"medians of 8 runs in {out / 'conv2d_5x5_latency' / 'index.parquet'}" in warning
    assert ("days" in warning) or ("years" in warning)
    # a normal sweep: no warning
    assert cli.main(["check", str(MANIFEST), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_estimate_defaults_without_an_index(tmp_path):
    from slicert_ops.report.estimate import (
        DEFAULT_PER_CANDIDATE_S,
        DEFAULT_PER_RUN_S,
        estimate,
        human,
    )

    est = estimate(18, 5_555_556, tmp_path / "nothing", "x")
    assert est.runs == 100_000_008 and est.too_big()
    assert est.seconds() == pytest.approx(18 * DEFAULT_PER_CANDIDATE_S
                                          + 100_000_008 * DEFAULT_PER_RUN_S)
    assert est.seconds(2) == pytest.approx(est.seconds() / 2)
    assert human(45) == "45 s" and human(7200) == "2.0 h" and human(86400 * 10) == "10 days"
    assert not estimate(18, 30, None).too_big()
    json.dumps(est.__dict__)
