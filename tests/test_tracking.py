"""Tracking (MLflow + S3), validation (GX) and faults, against the real services."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from support.runfolders import make_run_folder, make_sweep, sweep_manifest

from slicert_ops.errors import ServiceError
from slicert_ops.tracking.mlflow_log import TRACKED_FILE, read_tracked
from slicert_ops.tracking.retry import RetryPolicy, ServiceUnavailable
from slicert_ops.tracking.s3 import S3Settings, S3Store
from slicert_ops.tracking.sync import sync
from slicert_ops.validate import validate_results_table, validate_run, validate_runs

FAST = RetryPolicy(attempts=2, base_delay_s=0.1, max_delay_s=0.2)


def validate_verdicts(run_dirs):
    """The validation stage's verdicts (validation.json written into each folder)."""
    from slicert_ops.validate.stage import validate_runs as stage_validate_runs

    return stage_validate_runs(run_dirs)


def _tracker_imports_gx() -> bool:
    code = ("import sys, slicert_ops.tracking.mlflow_log, slicert_ops.tracking.worker, "
            "slicert_ops.tracking.sweep_sink; print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return out.strip() == "True"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def rest_runs(uri: str, exp_id: str, flt: str = "") -> list[dict]:
    resp = requests.post(f"{uri}/api/2.0/mlflow/runs/search", timeout=10,
                         json={"experiment_ids": [exp_id], "filter": flt, "max_results": 1000})
    resp.raise_for_status()
    return resp.json().get("runs", [])


def tags_of(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics_of(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def children(uri: str, exp_id: str) -> list[dict]:
    return [r for r in rest_runs(uri, exp_id) if tags_of(r).get("slicert.kind") == "measurement"]


def artifact_keys(store: S3Store, exp_id: str, run_id: str) -> set[str]:
    prefix = f"mlflow/{exp_id}/{run_id}/artifacts/"
    return {k[len(prefix):] for k in store.list(prefix)}


# --------------------------------------------------------------------------------------
# validation (no services needed)
# --------------------------------------------------------------------------------------
def test_valid_run_folder_passes(tmp_path):
    d = make_run_folder(tmp_path / "exp", with_raw=True)
    res = validate_run(d)
    assert res.success, res.failed_expectations
    assert res.report_html == d / "validation.html" and res.report_html.exists()
    report = json.loads((d / "validation.json").read_text())
    assert report["success"] is True and set(report["suites"]) == {"trace_events",
                                                                   "trace_metrics"}
    assert "PASSED" in res.report_html.read_text()


def test_valid_run_without_irq_load_passes(tmp_path):
    res = validate_run(make_run_folder(tmp_path / "exp", irq=False, micro_tiles=40))
    assert res.success, res.failed_expectations


@pytest.mark.parametrize("corrupt, expected", [
    ("non_monotone", "trace_events/cycles_monotone"),
    ("missing_kernel_end", "trace_metrics/kernel_end_once"),
    ("incorrect", "trace_metrics/output_correct"),
    ("tile_count", "trace_metrics/tile_end_count_matches_schedule"),
    ("unpaired_irq", "trace_metrics/every_irq_enter_has_exit"),
])
def test_gx_fails_on_corrupted_trace(tmp_path, corrupt, expected):
    d = make_run_folder(tmp_path / "exp", corrupt=corrupt)
    res = validate_run(d)
    assert not res.success
    assert expected in res.failed_expectations, res.failed_expectations
    html = res.report_html.read_text()
    assert "FAILED" in html and expected.split("/")[1] in html


def test_failed_run_without_trace_fails_validation(tmp_path):
    d = make_run_folder(tmp_path / "exp", status="failed")
    res = validate_run(d)
    assert not res.success
    assert any(f.startswith("preflight/run_status") for f in res.failed_expectations)
    assert (d / "validation.html").exists()


def test_cycles_txt_must_match_trace(tmp_path):
    d = make_run_folder(tmp_path / "exp")
    (d / "cycles.txt").write_text("kernel_cycles 1\n")
    res = validate_run(d)
    assert "trace_metrics/cycles_txt_matches_trace" in res.failed_expectations


def test_validation_is_fast_after_first_use(tmp_path):
    dirs = [make_run_folder(tmp_path / "exp", i) for i in range(3)]
    validate_run(dirs[0])
    t0 = time.perf_counter()
    for d in dirs[1:]:
        validate_run(d)
    assert (time.perf_counter() - t0) / 2 < 3.0


def _mixed_folders(exp_dir: Path) -> list[Path]:
    """Good runs, every corruption, a failed run, and runs GX cannot evaluate in a batch."""
    dirs = [make_run_folder(exp_dir, 0, 0), make_run_folder(exp_dir, 1, 0, irq=False,
                                                              micro_tiles=40)]
    for i, corrupt in enumerate(["non_monotone", "missing_kernel_end", "incorrect",
                                 "tile_count", "unpaired_irq"]):
        dirs.append(make_run_folder(exp_dir, 2 + i, 0, corrupt=corrupt))
    dirs.append(make_run_folder(exp_dir, 8, 0, status="failed"))
    edits = {
        9: lambda t: t["metrics"].pop("text_bytes"),              # column absent in one run
        10: lambda t: t.update(events=t["events"][:1]),           # one event
        11: lambda t: t["events"][5].update(cycles=None),         # a null stamp
        12: lambda t: t["metrics"].update(kernel_cycles="abc"),  # GX raises on the column
    }
    for i, edit in edits.items():
        d = make_run_folder(exp_dir, i, 0)
        trace = json.loads((d / "qemu_trace.json").read_text())
        edit(trace)
        (d / "qemu_trace.json").write_text(json.dumps(trace))
        dirs.append(d)
    return dirs


def test_batch_validation_matches_run_by_run(tmp_path):
    """validate_runs (one GX call per suite for all runs) gives every run the verdict and the
    failed expectations that validating it alone gives."""
    dirs = _mixed_folders(tmp_path / "exp")
    alone = [validate_run(d) for d in dirs]
    single_reports = [json.loads((d / "validation.json").read_text()) for d in dirs]
    batch = validate_runs(dirs)
    assert [r.success for r in batch] == [r.success for r in alone]
    for a, b in zip(alone, batch, strict=True):
        assert sorted(b.failed_expectations) == sorted(a.failed_expectations)
    assert [r.success for r in batch[:2]] == [True, True]
    assert "trace_events/cycles_monotone" in batch[2].failed_expectations
    assert "trace_metrics/has_events" in batch[9].failed_expectations
    # the per-run report of a batch names the run's own offending rows
    report = json.loads((dirs[2] / "validation.json").read_text())
    assert report["statistics"]["batch_runs"] == len(dirs)
    mono = next(r for r in report["suites"]["trace_events"]["results"]
                if r["expectation_config"]["meta"]["name"] == "cycles_monotone")
    single = next(r for r in single_reports[2]["suites"]["trace_events"]["results"]
                  if r["expectation_config"]["meta"]["name"] == "cycles_monotone")
    assert not mono["success"] and mono["result"]["unexpected_count"] == 1
    assert mono["result"]["partial_unexpected_index_list"] == \
        single["result"]["partial_unexpected_index_list"]
    assert "FAILED" in (dirs[2] / "validation.html").read_text()
    # and the same report shape alone and in a batch: GX's own batch meta (with its load
    # time) made a report depend on the batching and on the clock
    batched = json.loads((dirs[0] / "validation.json").read_text())
    assert batched["statistics"]["batch_runs"] == len(dirs)
    for name, suite in single_reports[0]["suites"].items():
        b = batched["suites"][name]
        assert set(b) == set(suite), name
        assert {k: v for k, v in b["meta"].items() if k != "batch"} == suite["meta"], name


def test_results_table_suite(tmp_path):
    good = pd.DataFrame({
        "candidate_id": ["0123456789abcdef", "0123456789abcdef", "fedcba9876543210"],
        "repeat": [0, 1, 0], "status": ["ok", "ok", "failed"],
        "kernel_cycles": [5000.0, 5000.0, None], "wall_cycles": [6000.0, 6000.0, None],
        "correct": [1, 1, 0]})
    res = validate_results_table(good, tmp_path)
    assert res.success, res.failed_expectations
    assert (tmp_path / "results_validation.html").exists()
    dup = pd.concat([good, good.iloc[:1]], ignore_index=True)
    res = validate_results_table(dup)
    assert "results_table/one_row_per_candidate_repeat" in res.failed_expectations
    minimal = good[["candidate_id", "repeat"]]  # optional columns absent: skipped, not failed
    assert validate_results_table(minimal).success
    bad_id = good.assign(candidate_id=["XYZ", "0123456789abcdef", "fedcba9876543210"])
    assert "results_table/candidate_id_format" in validate_results_table(bad_id) \
        .failed_expectations


# --------------------------------------------------------------------------------------
# tracking against the real services
# --------------------------------------------------------------------------------------
@pytest.mark.services
def test_log_runs_rest_and_s3(slicert_services, tmp_path):
    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    exp_dir = tmp_path / "results" / "track_basic"
    runs = make_sweep(exp_dir, candidates=2, repeats=2, with_raw=True)
    tracker = slicert_services.tracker()
    parent = tracker.open_sweep("track_basic", sweep_manifest("track_basic"), exp_dir)
    assert json.loads((exp_dir / "sweep.json").read_text())["parent_run_id"] == parent
    timings = []
    for d in runs:
        t0 = time.perf_counter()
        run_id = tracker.log_run(parent, d, validate_run(d))
        timings.append(time.perf_counter() - t0)
        assert read_tracked(d) == run_id
    print(f"log_run+validate: {[round(t, 2) for t in timings]} s")
    tracker.close_sweep(parent, "ok", report_dir=_report_dir(tmp_path))

    exp_id = tracker.experiment_id("track_basic")
    kids = children(uri, exp_id)
    assert len(kids) == 4
    trace = json.loads((runs[0] / "qemu_trace.json").read_text())
    store = slicert_services.s3()
    for run in kids:
        tags, metrics = tags_of(run), metrics_of(run)
        assert tags["mlflow.parentRunId"] == parent
        assert tags["slicert.valid"] == "true" and run["info"]["status"] == "FINISHED"
        assert set(trace["metrics"]) <= set(metrics)
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert {"candidate_id", "repeat", "schedule.unroll", "operator.name",
                "runner.irq_period_us", "versions.cycle_model", "versions.gcc"} <= set(params)
        keys = artifact_keys(store, exp_id, run["info"]["run_id"])
        assert {"manifest.json", "tvm_config.json", "zephyr_build.log", "qemu_trace.json",
                "cycles.txt", "validation.html", "validation.json", "raw/plugin.txt"} <= keys
        assert TRACKED_FILE not in keys
    first = next(r for r in kids if tags_of(r)["slicert.run"] == "run_0001")
    assert metrics_of(first)["kernel_cycles"] == trace["metrics"]["kernel_cycles"]
    sweep = [r for r in rest_runs(uri, exp_id) if r["info"]["run_id"] == parent][0]
    assert sweep["info"]["status"] == "FINISHED"
    assert metrics_of(sweep)["runs_valid"] == 4
    assert "report/summary.html" in artifact_keys(store, exp_id, parent)
    # the experiment opens in MLflow's machine-learning view (not the GenAI traces page)
    from slicert_ops.tracking.mlflow_rest import MlflowRest

    exp = MlflowRest(uri).get_experiment_by_name("track_basic")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_existing_experiments_get_the_ml_view_tag(slicert_services):
    from slicert_ops.tracking.mlflow_rest import MlflowRest

    rest = MlflowRest(slicert_services.env["MLFLOW_TRACKING_URI"])
    exp_id = rest.create_experiment("made_before_the_tag", tags={"slicert.managed": "true"})
    assert "mlflow.experimentKind" not in rest.get_experiment_by_name("made_before_the_tag").tags
    assert slicert_services.tracker().experiment_id("made_before_the_tag") == exp_id
    tags = rest.get_experiment_by_name("made_before_the_tag").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def _report_dir(tmp_path: Path) -> Path:
    d = tmp_path / "report"
    d.mkdir()
    (d / "summary.html").write_text("<html>sweep report</html>")
    return d


@pytest.mark.services
@pytest.mark.parametrize("upload", ["direct", "proxy"])
def test_log_runs_batch_artifacts_listed_by_mlflow(slicert_services, tmp_path, monkeypatch,
                                                   upload):
    """A batch of folders: one child each, artifacts in S3 under the run's artifact root
    (written straight to S3, or through the MLflow proxy) and listed by MLflow's REST API."""
    if upload == "proxy":
        monkeypatch.setenv("SLICERT_ARTIFACT_UPLOAD", "proxy")
    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    name = f"track_batch_{upload}"
    exp_dir = tmp_path / "results" / name
    runs = make_sweep(exp_dir, candidates=3, repeats=2, with_raw=True)
    verdicts = validate_verdicts(runs)
    tracker = slicert_services.tracker()
    parent = tracker.open_sweep(name, sweep_manifest(name, 3, 2), exp_dir)
    assert tracker._direct is (upload == "direct")
    ids = [r.run_id for r in tracker.log_runs(parent, verdicts)]
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 6
    assert [read_tracked(d) for d in runs] == ids
    exp_id = tracker.experiment_id(name)
    store = slicert_services.s3()
    for run_id in ids:
        keys = artifact_keys(store, exp_id, run_id)
        assert {"manifest.json", "qemu_trace.json", "validation.html", "raw/plugin.txt",
                "timeline.json", "timeline.html"} <= keys  # the timeline, made for the upload
        resp = requests.get(f"{uri}/api/2.0/mlflow/artifacts/list", timeout=10,
                            params={"run_id": run_id})
        listed = {f["path"] for f in resp.json()["files"]}
        assert {"manifest.json", "qemu_trace.json", "validation.html", "raw"} <= listed
        html = requests.get(f"{uri}/get-artifact", timeout=10,
                            params={"path": "validation.html", "run_uuid": run_id})
        assert html.status_code == 200 and "PASSED" in html.text
    kids = children(uri, exp_id)
    assert len(kids) == 6 and all(r["info"]["status"] == "FINISHED" for r in kids)
    assert all(tags_of(r)["slicert.complete"] == "true" for r in kids)
    # again, without the .tracked marks: found by tag, nothing duplicated
    for d in runs:
        (d / TRACKED_FILE).unlink()
    assert [r.run_id for r in tracker.log_runs(parent, runs)] == ids  # verdicts read back
    assert len(children(uri, exp_id)) == 6
    (runs[0] / TRACKED_FILE).unlink()  # a folder listed twice: logged (and locked) once
    assert [r.run_id for r in tracker.log_runs(parent, [runs[0], runs[0]])] == [ids[0], ids[0]]
    # a folder without a verdict is not logged: the tracker never validates
    unvalidated = make_run_folder(exp_dir, 7, 0, repeats=2)
    (res,) = tracker.log_runs(parent, [unvalidated])
    assert res.run_id is None and "validation.json" in str(res.error)
    assert not _tracker_imports_gx()


@pytest.mark.services
def test_tracking_sink_logs_in_background(slicert_services, tmp_path):
    """The sweep sink: runs handed over as they finish are validated and logged by the
    background workers; wait_validated() gives the verdicts, close() drains and ends the
    sweep."""
    from types import SimpleNamespace

    from slicert_ops.tracking.sweep_sink import Tracking

    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    name = "track_sink"
    exp_dir = tmp_path / "results" / name
    runs = make_sweep(exp_dir, candidates=3, repeats=2)
    bad = make_run_folder(exp_dir, 5, 0, repeats=2, corrupt="incorrect")
    tracking = Tracking(tracker=slicert_services.tracker(), experiment_name=name,
                        manifest=sweep_manifest(name, 3, 2), exp_dir=exp_dir, cost_model=None,
                        batch_size=4)
    for d in [*runs, bad]:
        tracking.on_run(SimpleNamespace(reused=False), d)
    tracking.wait_validated()
    assert all((d / "validation.json").is_file() for d in [*runs, bad])
    tracking.close(exp_dir, 0)
    assert all(read_tracked(d) for d in [*runs, bad])
    assert tracking.logged == 7 and tracking.invalid == 1 and not tracking.deferred
    exp_id = slicert_services.tracker().experiment_id(name)
    kids = children(uri, exp_id)
    assert len(kids) == 7
    assert sorted(r["info"]["status"] for r in kids) == ["FAILED"] + ["FINISHED"] * 6
    sweep = [r for r in rest_runs(uri, exp_id) if tags_of(r).get("slicert.kind") == "sweep"]
    assert len(sweep) == 1 and sweep[0]["info"]["status"] == "FINISHED"
    assert metrics_of(sweep[0])["runs_logged"] == 7 and metrics_of(sweep[0])["runs_valid"] == 6


@pytest.mark.services
def test_relogging_adds_no_duplicates(slicert_services, tmp_path):
    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    exp_dir = tmp_path / "results" / "track_idem"
    runs = make_sweep(exp_dir, candidates=2, repeats=2)
    validate_verdicts(runs)
    manifest = sweep_manifest("track_idem")
    tracker = slicert_services.tracker()
    parent = tracker.open_sweep("track_idem", manifest, exp_dir)
    ids = [tracker.log_run(parent, d) for d in runs]
    tracker.close_sweep(parent, "ok")
    # a re-run of the same manifest: same parent, same children, even without .tracked marks
    for d in runs:
        (d / TRACKED_FILE).unlink()
    tracker2 = slicert_services.tracker()
    assert tracker2.open_sweep("track_idem", manifest, exp_dir) == parent
    assert [tracker2.log_run(parent, d) for d in runs] == ids
    # a fresh copy of the same runs elsewhere (same candidate ids): still no new runs
    copy_dir = tmp_path / "again" / "track_idem"
    copies = make_sweep(copy_dir, candidates=2, repeats=2)
    validate_verdicts(copies)
    assert tracker2.open_sweep("track_idem", manifest, copy_dir) == parent
    assert [tracker2.log_run(parent, d) for d in copies] == ids
    counts = sync(tmp_path, tracker=tracker2)
    assert counts["uploaded"] == 0 and counts["already_tracked"] == 8
    exp_id = tracker.experiment_id("track_idem")
    assert len(children(uri, exp_id)) == 4
    sweeps = [r for r in rest_runs(uri, exp_id) if tags_of(r).get("slicert.kind") == "sweep"]
    assert len(sweeps) == 1


@pytest.mark.services
def test_invalid_runs_logged_as_failed_with_report(slicert_services, tmp_path):
    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    exp_dir = tmp_path / "results" / "track_invalid"
    good = make_run_folder(exp_dir, 0, 0)
    bad = make_run_folder(exp_dir, 1, 0, corrupt="missing_kernel_end")
    broken = make_run_folder(exp_dir, 2, 0, status="failed")
    tracker = slicert_services.tracker()
    parent = tracker.open_sweep("track_invalid", {"experiment": "track_invalid"}, exp_dir)
    for d in (good, bad, broken):
        tracker.log_run(parent, d, validate_run(d))
    tracker.close_sweep(parent, "ok")
    exp_id = tracker.experiment_id("track_invalid")
    by_run = {tags_of(r)["slicert.run"]: r for r in children(uri, exp_id)}
    assert by_run[good.name]["info"]["status"] == "FINISHED"
    store = slicert_services.s3()
    for d in (bad, broken):
        run = by_run[d.name]
        tags = tags_of(run)
        assert run["info"]["status"] == "FAILED"
        assert tags["slicert.valid"] == "false" and tags["slicert.validation"] == "failed"
        keys = artifact_keys(store, exp_id, run["info"]["run_id"])
        assert {"validation.html", "validation.json", "manifest.json"} <= keys
    assert "kernel_end_once" in tags_of(by_run[bad.name])["slicert.failed_expectations"]
    assert tags_of(by_run[broken.name])["slicert.status"] == "failed"
    valid = rest_runs(uri, exp_id, "tags.`slicert.valid` = 'true'")
    assert [tags_of(r)["slicert.run"] for r in valid] == [good.name]


@pytest.mark.services
def test_s3_killed_mid_sweep_then_sync(slicert_services, services_env, tmp_path, run_cli):
    """kill -9 the object store mid-sweep: clear error naming it, runs stay on disk, and
    `slicert sync` uploads them once it is back, with no duplicates."""
    from slicert_ops.services import S3, kill

    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    results = tmp_path / "results"
    exp_dir = results / "track_fault"
    runs = make_sweep(exp_dir, candidates=3, repeats=2)
    validate_verdicts(runs[:5])  # runs[5] is validated by `slicert sync`
    tracker = slicert_services.tracker(policy=FAST)
    parent = tracker.open_sweep("track_fault", sweep_manifest("track_fault", 3, 2), exp_dir)
    tracker.log_run(parent, runs[0])
    tracker.log_run(parent, runs[1])

    assert kill(slicert_services.cfg, S3) is not None  # SIGKILL
    try:
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable) as info:
            tracker.log_run(parent, runs[2])
        assert time.monotonic() - t0 < 30
        assert info.value.service == "s3"
        msg = str(info.value)
        assert "Object store (S3)" in msg and "slicert services up" in msg
        assert not (runs[2] / TRACKED_FILE).exists()
        # the deferring variant keeps going without waiting on the dead service
        t0 = time.monotonic()
        assert tracker.log_run_or_defer(parent, runs[3]) is None
        assert tracker.log_run_or_defer(parent, runs[4]) is None
        assert time.monotonic() - t0 < 30
        rc, out, err = run_cli(["sync", str(results)])
        assert rc == 3 and "Object store (S3)" in err and "Traceback" not in err
    finally:
        slicert_services.restart()

    rc, out, err = run_cli(["sync", str(results)])
    assert rc == 0, err
    assert "4 uploaded" in out
    for d in runs:
        assert read_tracked(d)
    exp_id = tracker.experiment_id("track_fault")
    kids = children(uri, exp_id)
    assert len(kids) == 6
    keys = {(tags_of(r)["slicert.candidate_id"], tags_of(r)["slicert.repeat"]) for r in kids}
    assert len(keys) == 6
    assert all(r["info"]["status"] == "FINISHED" for r in kids)
    store = slicert_services.s3()
    for r in kids:
        assert "qemu_trace.json" in artifact_keys(store, exp_id, r["info"]["run_id"])
    rc, out, _ = run_cli(["sync", str(results)])
    assert rc == 0 and "0 uploaded" in out
    assert len(children(uri, exp_id)) == 6


@pytest.mark.services
def test_mlflow_down_is_a_clear_error(slicert_services, tmp_path):
    from conftest_services import free_port_block

    from slicert_ops.tracking import Tracker, preflight

    dead = f"http://127.0.0.1:{free_port_block(1)}"
    tracker = Tracker(dead, policy=FAST)
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as info:
        tracker.open_sweep("nowhere", {"x": 1}, tmp_path / "exp")
    assert time.monotonic() - t0 < 30
    assert f"MLflow at {dead} is not answering" in str(info.value)
    assert "slicert services up" in str(info.value)
    assert (tmp_path / "exp" / "sweep.json").exists()  # kept for `slicert sync`
    with pytest.raises(ServiceError, match="MLflow"):
        preflight(dead)


@pytest.mark.services
def test_wrong_credentials_are_a_clear_error(slicert_services, services_env, tmp_path,
                                             monkeypatch, run_cli):
    cfg = slicert_services.cfg
    wrong = S3Settings(cfg.s3_endpoint, services_env.env["SLICERT_S3_ACCESS_KEY"],
                       "not-the-secret-0123456789", cfg.bucket)
    with pytest.raises(ServiceError) as info:
        S3Store(wrong, policy=FAST).check()
    msg = str(info.value)
    assert "rejected the credentials" in msg and "SLICERT_S3_SECRET_KEY" in msg
    assert "not-the-secret" not in msg
    # through the CLI: exit 3 and one clear line, no traceback
    make_run_folder(tmp_path / "results" / "creds")
    monkeypatch.setenv("SLICERT_S3_SECRET_KEY", "not-the-secret-0123456789")
    rc, out, err = run_cli(["sync", str(tmp_path / "results")])
    assert rc == 3
    assert "rejected the credentials" in err and "Traceback" not in err


@pytest.mark.services
def test_mlflow_killed_mid_sweep_then_sync(slicert_services, services_env, tmp_path, run_cli):
    """kill -9 the MLflow server mid-sweep: errors name MLflow, runs stay on disk, sync after
    the restart logs them under the same sweep with no duplicates."""
    from slicert_ops.services import MLFLOW, kill

    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    results = tmp_path / "results"
    exp_dir = results / "track_mlflow_fault"
    runs = make_sweep(exp_dir, candidates=2, repeats=2)
    validate_verdicts(runs)
    tracker = slicert_services.tracker(policy=FAST)
    parent = tracker.open_sweep("track_mlflow_fault", sweep_manifest("track_mlflow_fault"),
                                exp_dir)
    tracker.log_run(parent, runs[0])
    assert kill(slicert_services.cfg, MLFLOW) is not None
    try:
        with pytest.raises(ServiceUnavailable) as info:
            tracker.log_run(parent, runs[1])
        assert info.value.service == "mlflow"
        assert f"MLflow at {uri} is not answering" in str(info.value)
        assert tracker.log_run_or_defer(parent, runs[2]) is None
        assert tracker.log_run_or_defer(parent, runs[3]) is None  # deferred: no wait
        rc, _, err = run_cli(["sync", str(results)])
        assert rc == 3 and "MLflow" in err and "slicert services up" in err
    finally:
        slicert_services.restart()
    rc, out, err = run_cli(["sync", str(results)])
    assert rc == 0 and "3 uploaded" in out, out + err
    exp_id = tracker.experiment_id("track_mlflow_fault")
    kids = children(uri, exp_id)
    assert len(kids) == 4 and {tags_of(r)["mlflow.parentRunId"] for r in kids} == {parent}
