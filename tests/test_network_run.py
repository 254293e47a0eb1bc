"""Network manifests end to end through `slicert run` and the orchestrated stages (real TVM,
gcc, QEMU with the cycle plugin, Great Expectations): per-task candidates, the default and
the tuned network, per-layer figures, report, validation, determinism, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLICERT = [sys.executable, "-m", "slicert_ops.cli"]

# Unseen shapes and order: odd input, rectangular kernel, stride 2 valid padding, depthwise
# with a multiplier, a residual add over a pooled branch, global average pooling.
MODEL = {
    "name": "odd", "dtype": "int8", "input": [1, 11, 9, 2], "seed": 7,
    "layers": [
        {"name": "c1", "type": "conv2d", "filters": 6, "kernel": [3, 2], "stride": 2,
         "padding": "valid", "activation": "relu6"},
        {"name": "dw", "type": "depthwise_conv2d", "kernel": 3, "padding": "same",
         "depth_multiplier": 2, "activation": "relu"},
        {"name": "pw", "type": "conv2d", "filters": 12, "kernel": 1},
        {"name": "res", "type": "add", "inputs": ["dw", "pw"], "activation": "relu"},
        {"name": "mp", "type": "max_pool", "pool": [2, 2], "padding": "same"},
        {"name": "gap", "type": "avg_pool", "pool": "global"},
        {"name": "flat", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 5},
    ]}


def _manifest(tmp: Path, name: str = "net_odd", **extra: object) -> Path:
    exp = {"name": name, "repeat": 1, "model": MODEL,
           "parameters": {"conv2d": {"unroll": [1, 3]}, "slice": [40]},
           "runner": {"simulate_irq_load": True, "irq_period_us": 150, "irq_jitter_us": 30,
                      "timeout_s": 120}}
    exp.update(extra)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"experiment": exp}, sort_keys=False))
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLICERT, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def _manifests(exp_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted(exp_dir.glob("run_*/manifest.json"))}


@pytest.fixture(scope="module")
def run_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("netrun")
    man = _manifest(tmp)
    res = _run("run", str(man), "--out", str(tmp / "res"), "--no-progress", "--jobs", "2",
               cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    return tmp, tmp / "res" / "net_odd", res.stdout


def test_run_measures_tasks_then_networks(run_once: tuple[Path, Path, str]) -> None:
    _, exp_dir, stdout = run_once
    mans = _manifests(exp_dir)
    kinds = [m["operator"]["type"] for m in mans.values()]
    # two conv2d tasks (c1, pw) x unroll {1, 3}, plus pw's default (unroll 4: 12 filters) as
    # the baseline; c1's default is unroll 3 (6 filters), already in the space
    assert kinds.count("network_task") == 5
    nets = [m for m in mans.values() if m["operator"]["type"] == "network"]
    assert 1 <= len(nets) <= 2
    assert {m["network"]["schedules"] for m in nets} <= {"default", "best per task"}
    assert all(m["status"] == "ok" for m in mans.values()), mans
    # the tuned network uses, per task, the measured schedule with the fewest kernel cycles
    tasks = [m for m in mans.values() if m["operator"]["type"] == "network_task"]
    best: dict[str, tuple[float, dict]] = {}
    for m in tasks:
        run = exp_dir / m["run"]
        cycles = json.loads((run / "qemu_trace.json").read_text())["metrics"]["kernel_cycles"]
        layer = m["operator"]["layers"][0]
        if layer not in best or cycles < best[layer][0]:
            best[layer] = (cycles, m["schedule"])
    tuned = [m for m in nets if m["network"]["schedules"] == "best per task"]
    if tuned:
        for layer, (_, sched) in best.items():
            assert tuned[0]["schedule"][f"{layer}.unroll"] == sched["unroll"]
    assert "networks (end to end" in stdout and "layers of the best network" in stdout


def test_network_run_is_correct_with_per_layer_metrics(run_once: tuple[Path, Path, str]
                                                       ) -> None:
    _, exp_dir, _ = run_once
    for name, man in _manifests(exp_dir).items():
        run = exp_dir / name
        trace = json.loads((run / "qemu_trace.json").read_text())
        cycles = dict(line.split() for line in (run / "cycles.txt").read_text().splitlines())
        assert cycles["correct"] == "1"
        assert json.loads((run / "validation.json").read_text())["success"] is True
        if man["operator"]["type"] != "network":
            assert json.loads((run / "tvm_config.json").read_text())["features_version"] \
                == "nf6"
            continue
        assert int(cycles["network_cycles"]) == trace["metrics"]["network_cycles"] > 0
        layers = trace["layers"]
        assert [row["layer"] for row in layers] == ["c1", "dw", "pw", "res", "mp", "gap", "fc"]
        types = [e["type"] for e in trace["events"]]
        assert types.count("layer_start") == types.count("layer_end") == len(layers)
        # layers tile the inference: their kernel cycles add up to at most the network's
        assert sum(r["kernel_cycles"] for r in layers) <= trace["metrics"]["kernel_cycles"]
        assert trace["metrics"]["max_preemption_latency_cycles"] == max(
            r["max_preemption_latency_cycles"] for r in layers)


def test_index_layers_and_report(run_once: tuple[Path, Path, str]) -> None:
    _, exp_dir, _ = run_once
    layers = pd.read_parquet(exp_dir / "layers.parquet")
    n_nets = sum(1 for m in _manifests(exp_dir).values()
                 if m["operator"]["type"] == "network")
    assert len(layers) == 7 * n_nets
    assert set(layers["type"]) == {"conv2d", "depthwise_conv2d", "add", "max_pool",
                                   "avg_pool", "dense"}
    index = pd.read_parquet(exp_dir / "index.parquet")
    assert index["valid"].all()
    report = exp_dir / "report"
    for png in ("layers.png", "network_e2e_vs_preemption.png"):
        assert (report / png).stat().st_size > 5000
    html = (report / "summary.html").read_text()
    assert "Network candidates (end to end)" in html and "data:image/png;base64," in html


def test_slicert_report_of_a_network_results_folder(run_once: tuple[Path, Path, str]) -> None:
    """`slicert report RESULTS` (its own output folder) finds the network's run folders and
    draws the same per-layer figures as the sweep's report."""
    tmp, exp_dir, _ = run_once
    res = _run("report", str(exp_dir.parent), "--out", str(tmp / "reports"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    out = tmp / "reports" / "net_odd"
    for png in ("layers.png", "network_e2e_vs_preemption.png"):
        assert (out / png).stat().st_size > 5000
    html = (out / "summary.html").read_text()
    assert "default" in html and "Layers of the best network" in html


def test_same_manifest_gives_identical_bytes(run_once: tuple[Path, Path, str]) -> None:
    tmp, exp_dir, _ = run_once
    res = _run("run", str(tmp / "net_odd.yaml"), "--out", str(tmp / "again"),
               "--no-progress", cwd=tmp)
    assert res.returncode == 0, res.stderr
    for name in _manifests(exp_dir):
        for f in ("cycles.txt", "qemu_trace.json", "tvm_config.json"):
            assert (exp_dir / name / f).read_bytes() == \
                (tmp / "again" / "net_odd" / name / f).read_bytes(), (name, f)


def test_orchestrated_stages_equal_slicert_run(run_once: tuple[Path, Path, str]) -> None:
    """plan -> batch (each) -> aggregate, as the DAG runs them: the same runs, the same
    bytes, and the aggregate stage measures the tuned network."""
    tmp, exp_dir, _ = run_once
    out = tmp / "staged"
    plan = _run("stage", "plan", str(tmp / "net_odd.yaml"), "--out", str(out),
                "--batch-size", "2", cwd=tmp)
    assert plan.returncode == 0, plan.stderr
    info = json.loads(plan.stdout.strip().splitlines()[-1])
    for b in info["batches"]:
        res = _run("stage", "batch", info["plan"], "--batch", str(b), cwd=tmp)
        assert res.returncode == 0, res.stderr
    agg = _run("stage", "aggregate", info["plan"], cwd=tmp)
    assert agg.returncode == 0, agg.stdout + agg.stderr
    staged = _manifests(out / "net_odd")
    assert sorted(staged) == sorted(_manifests(exp_dir))
    for name in staged:
        assert (out / "net_odd" / name / "cycles.txt").read_bytes() == \
            (exp_dir / name / "cycles.txt").read_bytes()
    assert (out / "net_odd" / "layers.parquet").is_file()


def test_too_big_for_lm3s6965_suggests_mps2_an385(tmp_path: Path) -> None:
    big = {**MODEL, "input": [1, 64, 64, 3], "layers": [
        {"name": "c1", "type": "conv2d", "filters": 16, "kernel": 3, "padding": "same"},
        {"name": "flat", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 8}]}
    man = _manifest(tmp_path, name="net_big", model=big)
    res = _run("run", str(man), "--out", str(tmp_path / "res"), cwd=tmp_path)
    assert res.returncode == 2
    assert "mps2-an385" in res.stderr and "experiment.model" in res.stderr
    assert not (tmp_path / "res" / "net_big").exists()  # nothing ran


def test_network_manifest_errors_name_field_and_fix(tmp_path: Path) -> None:
    bad = {**MODEL, "layers": [*MODEL["layers"][:2], {"name": "x", "type": "lstm"}]}
    res = _run("check", str(_manifest(tmp_path, name="net_bad", model=bad)), cwd=tmp_path)
    assert res.returncode == 2 and "experiment.model.layers[2]" in res.stderr
    both = _manifest(tmp_path, name="net_both", operator={"type": "dense", "input": [1, 4],
                                                          "units": 2})
    res = _run("check", str(both), cwd=tmp_path)
    assert res.returncode == 2 and "not both" in res.stderr
    ms = _manifest(tmp_path, name="net_ms", search={"strategy": "meta_schedule", "budget": 4})
    res = _run("check", str(ms), cwd=tmp_path)
    assert res.returncode == 2 and "cost_model" in res.stderr
    space = _manifest(tmp_path, name="net_space",
                      parameters={"dense": {"channel_tile": [2]}, "slice": [40]})
    res = _run("check", str(space), cwd=tmp_path)
    assert res.returncode == 2 and "experiment.parameters.dense.channel_tile" in res.stderr


def test_search_runs_per_task(tmp_path: Path) -> None:
    man = _manifest(tmp_path, name="net_search",
                    search={"strategy": "random", "budget": 1, "seed": 3},
                    runner={"simulate_irq_load": False, "timeout_s": 120})
    res = _run("run", str(man), "--out", str(tmp_path / "res"), "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    exp_dir = tmp_path / "res" / "net_search"
    mans = _manifests(exp_dir).values()
    # budget 1 per task: one of the two schedules of each of the two conv2d tasks
    assert sum(m["operator"]["type"] == "network_task" for m in mans) == 2
    assert sorted(p.name for p in (exp_dir / "search").iterdir() if p.is_dir()) == ["c1", "pw"]
    assert any(m["operator"]["type"] == "network" for m in mans)


@pytest.mark.services
def test_tracked_network_run_carries_per_layer_metrics(run_once: tuple[Path, Path, str],
                                                        slicert_services, tmp_path: Path
                                                        ) -> None:
    """A network run logged to the real MLflow server has layer.<name>.<metric> metrics
    equal to its trace's per-layer figures (the verdict is the folder's validation.json)."""
    import shutil

    import requests

    _, exp_dir, _ = run_once
    copy = tmp_path / "results" / "net_odd"
    shutil.copytree(exp_dir, copy, ignore=shutil.ignore_patterns(".tracked", "report"))
    name = next(n for n, m in _manifests(copy).items() if m["operator"]["type"] == "network")
    tracker = slicert_services.tracker()
    parent = tracker.open_sweep("net_odd_tracked", {"experiment": "net_odd_tracked"}, copy)
    run_id = tracker.log_run(parent, copy / name)
    uri = slicert_services.env["MLFLOW_TRACKING_URI"]
    resp = requests.get(f"{uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                        timeout=10)
    resp.raise_for_status()
    metrics = {m["key"]: m["value"] for m in resp.json()["run"]["data"]["metrics"]}
    layers = json.loads((copy / name / "qemu_trace.json").read_text())["layers"]
    assert len(layers) == 7
    for row in layers:
        for metric in ("kernel_cycles", "max_granule_cycles", "max_preemption_latency_cycles"):
            assert metrics[f"layer.{row['layer']}.{metric}"] == row[metric]
    assert metrics["network_cycles"] > 0


def _html_table_after(html: str, title_start: str) -> tuple[str, list[dict[str, str]]]:
    """(the full title, rows as {header: cell}) of the report table under a heading."""
    m = re.search(r"<h2>(" + re.escape(title_start) + r"[^<]*)</h2>(.*?)</table>", html, re.S)
    assert m, f"no table {title_start!r} in the report"
    heads = re.findall(r"<th>([^<]*)</th>", m.group(2))
    rows = [re.findall(r"<td>([^<]*)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>",
                                                                      m.group(2), re.S)]
    return m.group(1), [dict(zip(heads, r, strict=True)) for r in rows if r]


def test_report_layer_table_keeps_precision_with_roofline(run_once: tuple[Path, Path, str]
                                                          ) -> None:
    """The HTML per-layer table shows what `slicert run` prints: MACs per cycle with three
    significant digits, whole cycles; the MACs per cycle, the roofline share and the granule
    side by side; layers.parquet holds kind and roofline_share (MAC layers only)."""
    from slicert_ops.network.roofline import M3_PEAK_MACS_PER_CYCLE

    _, exp_dir, _ = run_once
    layers = pd.read_parquet(exp_dir / "layers.parquet")
    kinds = dict(zip(layers["layer"], layers["kind"], strict=False))
    assert kinds["c1"] == "conv" and kinds["dw"] == "depthwise 3x3"
    assert kinds["pw"] == "pointwise 1x1" and kinds["fc"] == "dense"
    mac = layers["type"].isin(["conv2d", "depthwise_conv2d", "dense"])
    want = layers["macs"] / layers["kernel_cycles"] / M3_PEAK_MACS_PER_CYCLE
    assert (layers.loc[mac, "roofline_share"] - want[mac]).abs().max() < 1e-12
    assert (layers.loc[mac, "roofline_share"] < 1).all()  # nothing beats the MLA limit
    assert layers.loc[~mac, "roofline_share"].isna().all()  # pools, adds: no MACs

    report = exp_dir / "report"
    assert (report / "layers_roofline.png").stat().st_size > 5000
    html = (report / "summary.html").read_text()
    assert "roofline" in html
    title, rows = _html_table_after(html, "Layers of the best network")
    run = title.rsplit("(", 1)[1].rstrip(")")
    own = layers[layers["run"] == run].set_index("layer")
    assert [r["layer"] for r in rows] == list(own.index)
    heads = list(rows[0])
    assert heads.index("roofline_share") == heads.index("macs_per_cycle") + 1
    assert heads.index("max_granule_cycles") - heads.index("macs_per_cycle") <= 3
    for r in rows:
        src = own.loc[r["layer"]]
        assert r["macs_per_cycle"] == f"{src['macs_per_cycle']:.3g}", r
        assert r["kernel_cycles"] == f"{int(src['kernel_cycles']):,}", r
        assert r["max_granule_cycles"] == f"{int(src['max_granule_cycles']):,}", r
        if src["type"] in ("conv2d", "depthwise_conv2d", "dense"):
            assert r["roofline_share"] == f"{src['roofline_share']:.3g}", r
        else:
            assert r["roofline_share"] == "", r


def test_summary_prints_layers_at_report_precision_and_roofline(
        run_once: tuple[Path, Path, str]) -> None:
    """`slicert run`'s end-of-run summary: the layer table with the report's precision and
    one roofline line per MAC layer (MACs/cycle, share of 0.5), none for pools and adds."""
    _, exp_dir, stdout = run_once
    layers = pd.read_parquet(exp_dir / "layers.parquet")
    roof = stdout.split("roofline (", 1)[1].splitlines()[1:]
    roof = [line for line in roof if line.startswith("  ")]
    named = {line.split()[0]: line for line in roof}
    assert sorted(named) == ["c1", "dw", "fc", "pw"]
    table = stdout.split("layers of the best network", 1)[1].split("roofline (", 1)[0]
    for name, line in named.items():
        mpc = layers[layers["layer"] == name]["macs_per_cycle"]
        assert any(f" {v:.3g} MACs/cycle" in line for v in mpc), line
        assert any(f"{v:.3g}" in table for v in mpc), (name, table)
        assert " % of 0.5" in line, line
    assert "CMSIS-NN dense: 0.142" in named["fc"]
    # every ratio printed in the networks and layers tables: three significant digits at most
    # (pandas would print 0.1210 or 0.069500); cycles are whole, with separators
    tables = stdout.split("networks (end to end", 1)[1].split("roofline (", 1)[0]
    decimals = re.findall(r"(?<![\w.,])\d+\.\d+(?![\w.])", tables)
    assert decimals, tables
    assert all(len(d.replace(".", "").lstrip("0")) <= 3 for d in decimals), decimals
    assert not re.search(r"(?<![\w.,])\d{4,}\b", tables), tables  # 120073, not 120,073
