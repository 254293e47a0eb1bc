"""Result index (Parquet) and sweep reports (PNG plots, summary.md/.html)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.synthetic_runs import DENSE, write_sweep

from slicert_ops import commands_model
from slicert_ops.errors import InputError
from slicert_ops.report.index import METRICS, build_index, write_index
from slicert_ops.report.plots import pareto_mask
from slicert_ops.report.report import candidate_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONV = "conv2d_5x5_latency"
DENSE_EXP = "dense_no_irq"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slicert")
    commands_model.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "results"
    write_sweep(root, CONV, tile_sizes=(8, 16, 32), micro_tiles=(1, 2, 4), unrolls=(1, 2, 4),
                slices=(32, 64), repeat=3, failed=lambda c, r: c == 0 and r == 1,
                incorrect=lambda c, r: c == 1 and r == 0,
                validation=lambda c, r: (False if c == 2 else True) if c < 4 else None,
                prediction_version="3")
    write_sweep(root, DENSE_EXP, operator=DENSE, tile_sizes=(8, 16), micro_tiles=(1, 2),
                unrolls=(1, 4), slices=(32,), repeat=2,
                runner={"simulate_irq_load": False, "irq_period_us": 0, "irq_jitter_us": 0})
    # an interrupted write and a superseded run: the index must skip both
    shutil.copytree(root / CONV / "run_0001", root / CONV / "run_0999.tmp-1234")
    shutil.copytree(root / CONV / "run_0001", root / CONV / ".superseded" / "run_0001-x-1")
    return root


def assert_png(path: Path, min_bytes: int = 8000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.refs: list[str] = []  # every other href/src: must not point at local files

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and (a.get("href") or "").startswith("timelines/"):
            return  # a link to a timeline page beside the report, not drawn content
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        for key in ("href", "src"):
            if tag != "img" and a.get(key):
                self.refs.append(a[key])


def assert_self_contained(html: str, png_names: set[str]) -> None:
    """Every <img> is an embedded PNG that decodes (what a browser would draw); no relative
    reference is left, so the page renders the same alone, anywhere (MLflow preview)."""
    parser = _Images()
    parser.feed(html)
    assert len(parser.srcs) == len(png_names), (parser.srcs[:1], png_names)
    assert not parser.refs, parser.refs
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,"), src[:80]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_MAGIC
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes every pixel: a truncated or corrupt image raises here
            assert img.width > 200 and img.height > 150
    for name in png_names:  # each figure is embedded, named in its caption
        assert f"({name})</figcaption>" in html


# -- index ----------------------------------------------------------------------------------

def test_index_one_row_per_run_folder(results):
    df = build_index(results)
    assert len(df) == 54 * 3 + 8 * 2  # the .tmp-* folder is not a run
    assert set(df["experiment"]) == {CONV, DENSE_EXP}
    for col in ["experiment", "run", "run_index", "candidate_id", "candidate_index", "repeat",
                "seed", "status", "error", "validation_success", "valid", "run_dir",
                "schedule.tile_size", "schedule.micro_tile", "schedule.unroll", "schedule.slice",
                "operator.type", "operator.input_0", "runner.irq_period_us", "versions.tvm",
                "versions.cycle_model", "f_macs", "f_micro_tile", "host_timings_s.build",
                "prediction.predicted_kernel_cycles", *METRICS]:
        assert col in df.columns, col
    # schedule parameters in manifest-spec order
    sched = [c for c in df.columns if c.startswith("schedule.")]
    assert sched == ["schedule.tile_size", "schedule.micro_tile", "schedule.unroll",
                     "schedule.slice"]
    conv = df[df["experiment"] == CONV].set_index("run")
    assert conv.loc["run_0002", "status"] == "failed"
    assert pd.isna(conv.loc["run_0002", "kernel_cycles"])
    assert conv.loc["run_0004", "correct"] == 0 and not conv.loc["run_0004", "valid"]
    assert conv.loc["run_0007", "validation_success"] == False  # noqa: E712
    assert not conv.loc["run_0007", "valid"]
    assert conv.loc["run_0001", "validation_success"] == True  # noqa: E712
    assert pd.isna(conv.loc["run_0013", "validation_success"])  # no validation.json
    assert conv.loc["run_0013", "valid"]
    trace = json.loads((results / CONV / "run_0013" / "qemu_trace.json").read_text())
    for name in METRICS:
        assert conv.loc["run_0013", name] == trace["metrics"][name], name


def test_index_of_one_experiment(results):
    assert len(build_index(results, experiment=CONV)) == 54 * 3
    assert len(build_index(results / CONV)) == 54 * 3
    assert set(build_index(results, experiment=DENSE_EXP)["experiment"]) == {DENSE_EXP}


def test_write_index_parquet_roundtrip(results, tmp_path):
    path = write_index(results, tmp_path / "idx" / "index.parquet")
    back = pd.read_parquet(path)
    assert len(back) == len(build_index(results))
    assert back["validation_success"].isna().any() and back["valid"].dtype == bool
    assert back["kernel_cycles"].dtype.kind in "if"


def test_index_of_missing_folder(tmp_path):
    with pytest.raises(InputError, match="results folder not found"):
        build_index(tmp_path / "nope")


# -- plots and report ------------------------------------------------------------------------

def test_pareto_mask():
    x = np.array([1, 2, 3, 4, 2, 5])
    y = np.array([9, 5, 6, 1, 5, 0.5])
    assert pareto_mask(x, y).tolist() == [True, True, False, True, True, True]


def test_candidate_table_aggregates_valid_repeats(results):
    df = build_index(results)
    runs = df[(df["experiment"] == CONV) & df["valid"]]
    cand = candidate_table(runs)
    assert len(cand) == 54 - 1  # candidate 2 failed validation in every repeat
    assert cand["kernel_cycles"].is_monotonic_increasing
    row = cand[cand["candidate_id"] == runs["candidate_id"].iloc[0]].iloc[0]
    sub = runs[runs["candidate_id"] == row["candidate_id"]]
    assert row["runs"] == len(sub)
    assert row["max_preemption_latency_cycles"] == sub["max_preemption_latency_cycles"].max()
    front = cand[cand["pareto"]]
    assert len(front) >= 2
    assert front["kernel_cycles"].min() == cand["kernel_cycles"].min()
    assert front["max_preemption_latency_cycles"].min() == cand[
        "max_preemption_latency_cycles"].min()


def test_write_report_files(results, tmp_path):
    df = build_index(results)
    out = tmp_path / "rep"
    paths = write_report(df, out, CONV)
    names = {p.name for p in paths}
    assert {"cycles_vs_tile_size.png", "cycles_vs_micro_tile.png", "cycles_vs_unroll.png",
            "cycles_vs_slice.png", "pareto_kernel_vs_preemption.png", "irq_latency.png",
            "cost_model_predicted_vs_measured.png", "summary.md", "summary.html",
            "candidates.csv"} == {n for n in names if not n.startswith("run_")}
    timelines = {p for p in paths if p.parent != out}
    assert timelines and all(p.parent == out / "timelines" for p in timelines)
    for p in paths:
        assert p.is_file()
        if p.suffix == ".png":
            assert_png(p)
    md = (out / "summary.md").read_text()
    cand = candidate_table(df[(df["experiment"] == CONV) & df["valid"]])
    best_kernel = cand.iloc[0]["candidate_id"]
    best_preempt = cand.sort_values(["max_preemption_latency_cycles", "kernel_cycles"]).iloc[0]
    section = md.split("## Best by kernel cycles")[1].split("##")[0]
    assert section.splitlines()[4].startswith(f"| {best_kernel} |")
    section = md.split("## Best by worst preemption latency")[1].split("##")[0]
    assert section.splitlines()[4].startswith(f"| {best_preempt['candidate_id']} |")
    assert "## Pareto set" in md and "## Runs left out" in md
    for name in names - {"summary.md", "summary.html", "candidates.csv"}:
        assert f"]({'timelines/' if name.startswith('run_') else ''}{name})" in md
    html = (out / "summary.html").read_text()
    assert html.startswith("<!doctype html>") and "pareto_kernel_vs_preemption.png" in html
    assert_self_contained(html, {n for n in names if n.endswith(".png")})
    assert "162 runs" in md and "1 failed" in md and "1 with wrong output" in md


def test_report_without_irq_load_or_variation(results, tmp_path):
    df = build_index(results)
    paths = write_report(df, tmp_path / "dense", DENSE_EXP)
    names = {p.name for p in paths}
    assert "cycles_vs_slice.png" not in names  # one value only: stated in the summary
    assert {"cycles_vs_tile_size.png", "pareto_kernel_vs_preemption.png",
            "irq_latency.png"} <= names
    for p in paths:
        if p.suffix == ".png":
            assert_png(p, 5000)
    assert "Fixed in this sweep: slice = 32" in (tmp_path / "dense" / "summary.md").read_text()


def test_report_when_every_run_failed(tmp_path):
    root = tmp_path / "results"
    write_sweep(root, "broken", limit=3, repeat=2, failed=lambda c, r: True)
    df = build_index(root)
    assert len(df) == 6 and not df["valid"].any() and "kernel_cycles" in df
    paths = write_report(df, tmp_path / "rep", "broken")
    assert {p.name for p in paths} == {"summary.md", "summary.html"}
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "6 runs, 0 valid" in md and "## Runs left out (6)" in md and "hard fault" in md


def test_cli_index_and_report(results, tmp_path, capsys):
    assert run_cli(["index", str(results), "--out", str(tmp_path / "i.parquet")]) == 0
    assert "178 runs" in capsys.readouterr().out
    assert run_cli(["report", str(results), "--out", str(tmp_path / "reports")]) == 0
    out = capsys.readouterr().out
    assert CONV in out and DENSE_EXP in out
    assert (tmp_path / "reports" / CONV / "summary.html").is_file()
    assert (tmp_path / "reports" / DENSE_EXP / "pareto_kernel_vs_preemption.png").is_file()
    assert run_cli(["report", str(results / CONV), "--experiment", CONV,
                    "--out", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == [CONV]
    with pytest.raises(InputError, match="experiment 'nope' not found"):
        run_cli(["report", str(results), "--experiment", "nope"])


def test_report_renders_alone_and_inside_mlflow(results, tmp_path, slicert_services):
    """The HTML copied alone to an empty folder, and as MLflow serves it to its artifact
    preview (uploaded by close_sweep), holds every plot."""
    df = build_index(results)
    paths = write_report(df, tmp_path / "report", CONV)
    pngs = {p.name for p in paths if p.suffix == ".png"}
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "report" / "summary.html", alone / "summary.html")
    assert_self_contained((alone / "summary.html").read_text(), pngs)

    tracker = slicert_services.tracker()
    parent = tracker.open_sweep(CONV, {"report-test": True}, tmp_path / "sweep")
    tracker.close_sweep(parent, "ok", report_dir=tmp_path / "report")
    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    q = urllib.parse.urlencode({"path": "report/summary.html", "run_uuid": parent})
    with urllib.request.urlopen(f"{uri}/get-artifact?{q}", timeout=30) as resp:
        served = resp.read().decode()
    assert served == (alone / "summary.html").read_text()
    assert_self_contained(served, pngs)


# -- where the results went, retention ------------------------------------------------------

def test_sweep_outcome_counts_paths_and_best(results, tmp_path, monkeypatch):
    from slicert_ops.report.outcome import outcome_lines, sweep_outcome

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SLICERT_MLFLOW_UI_URL", raising=False)
    df = build_index(results)
    exp_dir = results / CONV
    write_index(exp_dir, exp_dir / "index.parquet", df=df)
    write_report(df, exp_dir / "report", CONV)
    (exp_dir / "sweep.json").write_text(json.dumps({"experiment_id": "4",
                                                    "parent_run_id": "r1"}))
    o = sweep_outcome(exp_dir, CONV, df)
    conv = df[df["experiment"] == CONV]
    ok = int((conv["status"] == "ok").sum())
    assert o["runs"] == {"total": 162, "valid": int(conv["valid"].sum()),
                         "failed": 162 - ok, "invalid": ok - int(conv["valid"].sum())}
    assert o["runs"]["failed"] == 1 and o["runs"]["invalid"] >= 2  # wrong output + GX
    assert o["index"] == str((exp_dir / "index.parquet").resolve())
    assert o["report"] == str((exp_dir / "report" / "summary.html").resolve())
    assert o["mlflow_url"] is None  # no MLflow address in this environment
    cand = candidate_table(conv[conv["valid"]])
    assert o["best"]["by_kernel_cycles"][0]["candidate_id"] == cand.iloc[0]["candidate_id"]
    text = "\n".join(outcome_lines(o))
    assert f"162 runs: {o['runs']['valid']} ok, 1 failed" in text
    assert str(exp_dir.resolve()) in text and "index.parquet" in text
    json.dumps(o)  # the aggregate task's XCom


def test_sweep_outcome_links_open_the_ml_view(tmp_path, monkeypatch):
    from slicert_ops.report.outcome import outcome_lines, sweep_outcome

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    (tmp_path / "sweep.json").write_text(json.dumps({"experiment_id": "4",
                                                     "parent_run_id": "r1"}))
    o = sweep_outcome(tmp_path, "x", None)
    assert o["mlflow_experiment_url"] == ("http://127.0.0.1:5999/#/experiments/4"
                                          "?workflowType=machine_learning")
    assert o["mlflow_url"] == ("http://127.0.0.1:5999/#/experiments/4/runs/r1"
                               "?workflowType=machine_learning")
    assert any(o["mlflow_url"] in line for line in outcome_lines(o))


def _attic(exp_dir: Path, name: str) -> Path:
    p = exp_dir / ".superseded" / name
    p.mkdir(parents=True)
    (p / "cycles.txt").write_text("kernel_cycles 1\n" * 100)
    return p


def test_gc_keeps_the_newest_k_per_run_and_never_published_runs(tmp_path, capsys):
    import os
    import time

    exp = tmp_path / "results" / "e"
    (exp / "run_0001").mkdir(parents=True)
    (exp / "run_0002.tmp-99").mkdir()
    old = [_attic(exp, f"run_0001-c{i}-{1000 + i}") for i in range(4)]
    other = _attic(exp, "run_0002-c9-1500")
    (exp / "plans").mkdir()
    stale, fresh = exp / "plans" / "old.json", exp / "plans" / "new.json"
    stale.write_text("{}")
    fresh.write_text("{}")
    os.utime(stale, (time.time() - 30 * 86400,) * 2)

    assert run_cli(["gc", str(tmp_path / "results"), "--keep", "1", "--dry-run"]) == 0
    assert "would remove 4" in capsys.readouterr().out
    assert all(p.exists() for p in old) and stale.exists()
    assert run_cli(["gc", str(tmp_path / "results"), "--keep", "1"]) == 0
    assert "removed 4 superseded folder(s)/old plan(s)" in capsys.readouterr().out
    assert [p.exists() for p in old] == [False, False, False, True]  # newest of run_0001
    assert other.exists() and fresh.exists() and not stale.exists()
    assert (exp / "run_0001").is_dir() and (exp / "run_0002.tmp-99").is_dir()
    assert run_cli(["gc", str(exp), "--keep", "0"]) == 0
    assert not (exp / ".superseded").exists() and (exp / "run_0001").is_dir()


def test_retention_policy_from_the_environment():
    from slicert_ops.report.retention import DEFAULT_KEEP, keep_from_env

    assert keep_from_env({}) == DEFAULT_KEEP
    assert keep_from_env({"SLICERT_KEEP_SUPERSEDED": "5"}) == 5
    assert keep_from_env({"SLICERT_KEEP_SUPERSEDED": "all"}) is None
    with pytest.raises(InputError, match="SLICERT_KEEP_SUPERSEDED"):
        keep_from_env({"SLICERT_KEEP_SUPERSEDED": "lots"})


def test_index_reads_only_the_trace_head(tmp_path):
    """The index stops reading a trace at its events (written last by dumps_trace); any
    other layout is parsed whole."""
    from slicert_ops.report.index import read_trace_head
    from slicert_ops.rundir import dumps_trace

    trace = {"schema": "slicert-trace/1", "exit_code": 0, "cycle_model": "cm3-v1",
             "metrics": {"kernel_cycles": 123, "irq_latency_mean_cycles": 12.5},
             "events": [{"kind": "yield", "cycles": i} for i in range(5000)]}
    head = {k: v for k, v in trace.items() if k != "events"}
    written = tmp_path / "qemu_trace.json"
    written.write_text(dumps_trace(trace))
    assert json.loads(written.read_text()) == trace
    assert read_trace_head(written) == head
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(trace))  # no head/events layout: whole-file fallback
    assert read_trace_head(compact) == trace
    empty = tmp_path / "empty.json"
    empty.write_text(dumps_trace({**head, "events": []}))
    assert read_trace_head(empty)["metrics"] == head["metrics"]
