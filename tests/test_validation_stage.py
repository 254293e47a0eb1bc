"""The validation stage on the real pipeline: every run folder of an untracked `slicert run`
gets its verdict (validation.json), a corrupted trace a failed one naming the reason, and the
cost model trains on the valid runs only. Real toolchain, real Great Expectations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from slicert_ops.validate.stage import ValidationStage, read_verdict, validate_run

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "slicert_ops.cli"]
MANIFEST = """experiment:
  name: vstage
  repeat: 2
  parameters:
    tile_size: [8, 16]
    unroll: [1, 2, 4]
    slice: [48]
  runner:
    simulate_irq_load: true
    irq_period_us: 300
"""


def slicert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def runs(exp_dir: Path) -> list[Path]:
    return sorted(p for p in exp_dir.glob("run_[0-9][0-9][0-9][0-9]") if p.is_dir())


def corrupt_trace(run_dir: Path) -> None:
    """Cycle stamps that go backwards (the trace_events suite's cycles_monotone)."""
    path = run_dir / "qemu_trace.json"
    trace = json.loads(path.read_text())
    trace["events"][5]["cycles"] = trace["events"][4]["cycles"] - 1
    path.write_text(json.dumps(trace))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("vstage")
    (base / "m.yaml").write_text(MANIFEST)
    res = slicert("run", str(base / "m.yaml"), "--out", str(base / "out"), "--jobs", "1",
                  "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    return base / "out" / "vstage"


def test_untracked_run_writes_a_verdict_in_every_run_folder(sweep: Path) -> None:
    folders = runs(sweep)
    assert len(folders) == 12
    for run in folders:
        report = json.loads((run / "validation.json").read_text())
        assert report["success"] is True, report["failed_expectations"]
        assert set(report["suites"]) == {"trace_events", "trace_metrics"}
        assert (run / "validation.html").is_file()
        assert not (run / ".tracked").exists()  # untracked: validated all the same
    assert not list(sweep.glob("run_*/.*.part"))  # written atomically
    assert not (sweep / "sweep.json").exists()
    index = pd.read_parquet(sweep / "index.parquet")
    assert index["valid"].all() and index["validation_success"].all()


def test_reused_runs_keep_their_verdict(sweep: Path) -> None:
    before = {p.name: (p / "validation.json").read_bytes() for p in runs(sweep)}
    res = slicert("run", str(sweep.parent.parent / "m.yaml"), "--out", str(sweep.parent))
    assert res.returncode == 0 and "reused 12" in res.stderr, res.stderr[-2000:]
    assert {p.name: (p / "validation.json").read_bytes() for p in runs(sweep)} == before


def test_corrupted_trace_and_failed_run_get_failed_verdicts(sweep: Path, tmp_path: Path
                                                             ) -> None:
    exp = tmp_path / "vstage"
    bad, failed, good = (exp / "run_0001", exp / "run_0002", exp / "run_0003")
    for src, dst in ((runs(sweep)[0], bad), (runs(sweep)[1], failed), (runs(sweep)[2], good)):
        shutil.copytree(src, dst)
        for name in ("validation.json", "validation.html"):
            (dst / name).unlink()
    corrupt_trace(bad)
    man = json.loads((failed / "manifest.json").read_text())
    man.update(status="failed", error="qemu: timed out after 3s")
    (failed / "manifest.json").write_text(json.dumps(man))
    (failed / "qemu_trace.json").unlink()

    stage = ValidationStage(batch_size=8, max_wait_s=1.0)  # the sweep's sink, as in a sweep
    for d in (bad, failed, good):
        stage(SimpleNamespace(reused=False), d)
    verdicts = stage.close()
    assert verdicts[good].success
    assert not verdicts[bad].success
    assert "trace_events/cycles_monotone" in verdicts[bad].failed_expectations
    assert not verdicts[failed].success
    assert any(r.startswith("preflight/run_status") and "timed out" in r
               for r in verdicts[failed].reasons), verdicts[failed].reasons
    for d in (bad, failed, good):  # on disk, and read back the same
        on_disk = read_verdict(d)
        assert on_disk is not None and on_disk.to_dict() == verdicts[d].to_dict()
    # a verdict already there is read back, not recomputed
    again = ValidationStage()
    again(SimpleNamespace(reused=True), bad)
    assert again.close()[bad].to_dict() == verdicts[bad].to_dict()
    assert again._proc is None  # no validation process was needed


def test_train_skips_invalid_runs(sweep: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from slicert_ops.costmodel.train import TrainConfig, train
    from slicert_ops.report.index import build_index

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp = tmp_path / "results" / "vstage"
    shutil.copytree(sweep, exp, ignore=shutil.ignore_patterns("index.parquet", "report"))
    bad = runs(exp)[3]
    corrupt_trace(bad)
    verdict = validate_run(bad, reuse=False)  # the stage's verdict for the changed folder
    assert not verdict.success and "trace_events/cycles_monotone" in verdict.reasons
    index = build_index(exp.parent)
    row = index.set_index("run").loc[bad.name]
    assert not row["valid"] and "cycles_monotone" in row["validation_failed"]
    assert int(index["valid"].sum()) == 11
    lines: list[str] = []
    result = train(TrainConfig(input=str(exp.parent / "**" / "qemu_trace.json"),
                               output=tmp_path / "m.pkl", min_runs=6, register=False),
                   echo=lines.append)
    assert result.n_runs == 12 and result.n_valid_runs == 11
    assert any("1 validation failed" in line for line in lines), lines
