"""Whole networks on the Cortex-M4F (runner.board: mps2-an386, issue 18): the memory plan
accepts the board, the firmware is built for the M4 with the hard-float ABI, the run is
checked bit-exact against numpy (every layer), the cycle model cm4-v1 and runner.cpu_mhz
are recorded in the candidates' versions and the traces; the network candidates of the
Cortex-M3 boards keep their ids. One small network through `slicert run` (one candidate),
one float32 network built directly: a few seconds. The MLPerf Tiny examples on the M4
(experiments/networks/*_m4.yaml) are not run here (README: their figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from slicert_ops.manifest import expand, load_manifest
from slicert_ops.network import check_board, load_network, plan_memory

ROOT = Path(__file__).resolve().parents[1]
BOARD = "mps2-an386"

MODEL = {"name": "tiny", "dtype": "int8", "input": [1, 8, 6, 2], "seed": 3, "layers": [
    {"name": "c1", "type": "conv2d", "filters": 4, "kernel": 3, "padding": "same",
     "activation": "relu"},
    {"name": "dw", "type": "depthwise_conv2d", "kernel": 3, "stride": 2, "padding": "same"},
    {"name": "gap", "type": "avg_pool", "pool": "global"},
    {"name": "flat", "type": "flatten"},
    {"name": "fc", "type": "dense", "units": 3}]}

# Fixed versions: the ids below depend on the manifest and the id rules only.
VERSIONS = {"slicert": "v", "tvm": "t", "tvm_ffi": "f", "gcc": "g", "qemu": "q",
            "runtime": "r", "plugin": "p", "cycle_model": "cm3-v2"}
# MODEL's candidates on the Cortex-M3 boards before the M4 network work (commit 9231f8c).
M3_IDS = {
    "lm3s6965evb": ["681cb745c476b8c0", "601c6a3c11c50fb3", "ad99d4c00ad0d4ff",
                    "32a0dc4f863aedcb"],
    "mps2-an385": ["e97e6038e0e585c9", "b02819c1406f25df", "8ff2cf4e5b34a120",
                   "90f18d74c2574e3f"],
}


def _manifest(tmp: Path, board: str, name: str = "net_tiny", parameters: dict | None = None,
              **runner: object) -> Path:
    exp = {"name": name, "repeat": 1, "model": MODEL,
           "parameters": parameters if parameters is not None
           else {"conv2d": {"unroll": [1, 2]}, "slice": [64]},
           "runner": {"board": board, "simulate_irq_load": True, "irq_period_us": 200,
                      "irq_jitter_us": 50, **runner}}
    path = tmp / f"{name}_{board}.yaml"
    path.write_text(yaml.safe_dump({"experiment": exp}, sort_keys=False))
    return path


@pytest.fixture(scope="module", autouse=True)
def runtime_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SLICERT_CACHE_DIR", str(tmp_path_factory.mktemp("slicert-cache")))
    yield
    mp.undo()


def test_m3_network_candidate_ids_unchanged_and_m4_ids_differ(tmp_path: Path) -> None:
    for board, ids in M3_IDS.items():
        cands = expand(load_manifest(_manifest(tmp_path, board)), versions=VERSIONS).candidates
        assert [c.id for c in cands] == ids, board
    m4 = expand(load_manifest(_manifest(tmp_path, BOARD, cpu_mhz=120)),
                versions=VERSIONS).candidates
    assert len(m4) == 4 and not {c.id for c in m4} & {i for v in M3_IDS.values() for i in v}
    # the real versions: cm4-v1 on the M4 (every candidate), cm3-v2 on the M3 boards
    m4 = expand(load_manifest(_manifest(tmp_path, BOARD, cpu_mhz=120))).candidates
    assert {c.versions["cycle_model"] for c in m4} == {"cm4-v1"}
    assert {c.runner["cpu_mhz"] for c in m4} == {120}
    m3 = expand(load_manifest(_manifest(tmp_path, "mps2-an385"))).candidates
    assert {c.versions["cycle_model"] for c in m3} == {"cm3-v2"}


def test_memory_plan_accepts_the_m4_board_as_the_an385() -> None:
    exp = yaml.safe_load((ROOT / "experiments" / "networks" / "vww_mobilenet_v1.yaml")
                         .read_text())["experiment"]
    net = load_network({"experiment": exp}, board="mps2-an385")
    plan = plan_memory(net)
    assert check_board(net, plan, BOARD) == []
    too_big = check_board(net, plan, "lm3s6965evb")
    assert too_big and "set runner.board: mps2-an385" in too_big[0].fix   # still the M3 board


def test_m4_examples_are_the_m3_ones_on_mps2_an386_at_120_mhz() -> None:
    nets = ROOT / "experiments" / "networks"
    for m3 in ("kws_ds_cnn", "ic_resnet8", "vww_mobilenet_v1", "ad_fc_autoencoder",
               "kws_ds_cnn_deadline"):
        a = yaml.safe_load((nets / f"{m3}.yaml").read_text())["experiment"]
        b = yaml.safe_load((nets / f"{m3}_m4.yaml").read_text())["experiment"]
        assert b["name"] == a["name"] + "_m4"
        assert b["runner"] == {**a["runner"], "board": BOARD, "cpu_mhz": 120}
        assert (b["model"], b.get("search")) == (a["model"], a.get("search"))
        # the M3 space, plus the simd form where the M4 has it (examples.M4_EXTRA)
        for op_type, space in a["parameters"].items():
            if op_type == "layers":
                for layer, sp in space.items():
                    got = b["parameters"]["layers"][layer]
                    assert {k: v for k, v in got.items() if k in sp and v == sp[k]} or not sp
            elif isinstance(space, dict):
                got = b["parameters"][op_type]
                for k, v in space.items():
                    assert got[k] == v or set(v) <= set(got[k]), (m3, op_type, k)
            else:
                assert b["parameters"][op_type] == space
        forms = [sp.get("form", []) for sp in b["parameters"].values() if isinstance(sp, dict)]
        assert any("simd" in f for f in forms), m3


@pytest.mark.integration
def test_small_network_runs_on_the_m4_bit_exact_with_cm4_v1(tmp_path: Path) -> None:
    # one schedule per task: one network candidate, no task candidates
    man = _manifest(tmp_path, BOARD, name="net_tiny_m4", parameters={"slice": [64]},
                    cpu_mhz=120, timeout_s=60)
    res = subprocess.run([sys.executable, "-m", "slicert_ops.cli", "run", str(man), "--out",
                          str(tmp_path / "res"), "--no-progress", "--jobs", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = sorted((tmp_path / "res" / "net_tiny_m4").glob("run_*"))
    assert len(runs) == 1
    run = runs[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["operator"]["type"] == "network"
    assert manifest["versions"]["cycle_model"] == "cm4-v1"
    assert manifest["runner"]["board"] == BOARD and manifest["runner"]["cpu_mhz"] == 120
    trace = json.loads((run / "qemu_trace.json").read_text())
    assert trace["cycle_model"] == "cm4-v1"
    assert trace["board"] == BOARD and trace["cpu_mhz"] == 120
    assert trace["network"]["first_wrong_layer"] is None
    assert [r["layer"] for r in trace["layers"]] == ["c1", "dw", "gap", "fc"]
    cycles = (run / "cycles.txt").read_text()
    assert "correct 1" in cycles.splitlines(), cycles
    log = (run / "zephyr_build.log").read_text()
    assert "-mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16" in log
    assert "-mcpu=cortex-m3" not in log
    # 120 MHz: the 200 us IRQ period is 24,000 cycles (SysTick / timer reloads of the build)
    assert "SLICERT_SYSCLK_HZ=120000000" in log
    # the report's roofline is the M4's (2 MACs/cycle), without the M3's CMSIS-NN figures
    import pandas as pd

    from slicert_ops.network.roofline import M4_PEAK_MACS_PER_CYCLE

    layers = pd.read_parquet(tmp_path / "res" / "net_tiny_m4" / "layers.parquet")
    mac = layers["type"].isin(["conv2d", "depthwise_conv2d", "dense"])
    want = layers["macs"] / layers["kernel_cycles"] / M4_PEAK_MACS_PER_CYCLE
    assert (layers.loc[mac, "roofline_share"] - want[mac]).abs().max() < 1e-12
    assert "against the Cortex-M4 limit of 2: SMLAD is 2 MACs in 1 cycle" in res.stdout
    assert "CMSIS-NN" not in res.stdout


@pytest.mark.integration
def test_float32_network_on_the_m4_hard_float(tmp_path: Path) -> None:
    from slicert_ops.firmware import RuntimeOptions
    from slicert_ops.network import build_network_firmware, network_artifacts, run_network

    net = load_network({"experiment": {"name": "f", "model": {**MODEL, "dtype": "float32"}}},
                       board=BOARD)
    opts = RuntimeOptions(slice_us=50, irq_load=True, irq_period_us=200, irq_jitter_us=50,
                          rt_work_iters=200, rt_deadline_us=200, cpu_mhz=120)
    nb = build_network_firmware(net, tmp_path / "fw", runtime_options=opts, board=BOARD)
    run = run_network(nb, tmp_path / "run", deadline_us=200)
    assert run.correct, run.mismatch
    assert np.allclose(run.output, run.expected, rtol=1e-4, atol=1e-4)
    assert run.metrics["rt_releases"] > 0
    trace = network_artifacts(nb, run, candidate_id="x")["qemu_trace.json"]
    assert trace["cycle_model"] == "cm4-v1" and trace["cpu_mhz"] == 120


@pytest.mark.integration
def test_tune_network_on_the_m4(tmp_path: Path) -> None:
    from slicert_ops.firmware import RuntimeOptions
    from slicert_ops.network.tune import tune_network

    net = load_network({"experiment": {"name": "t", "model": MODEL}}, board=BOARD)
    res = tune_network(net, tmp_path, parameters={"conv2d": {"unroll": [1, 2]}},
                       runtime_options=RuntimeOptions(cpu_mhz=120), board=BOARD)
    assert res.run is not None and res.run.correct, res.run and res.run.mismatch
    assert all(t.correct for t in res.trials)
    for log in [tmp_path / "final" / "fw" / "zephyr_build.log",
                *sorted(tmp_path.glob("t*_s*/fw/zephyr_build.log"))]:
        assert "-mcpu=cortex-m4" in log.read_text(), log


# The simd form's shapes: a padded 3x3 conv of 2 channels (an 18-byte patch: 5 groups, the
# last one padded), a 1x1 conv of 8 channels (the GEMM, read in place), a dense of 4 inputs.
SIMD_MODEL = {"name": "tiny_simd", "dtype": "int8", "input": [1, 7, 6, 2], "seed": 5,
              "layers": [
                  {"name": "c1", "type": "conv2d", "filters": 8, "kernel": 3,
                   "padding": "same", "activation": "relu"},
                  {"name": "pw", "type": "conv2d", "filters": 4, "kernel": 1},
                  {"name": "gap", "type": "avg_pool", "pool": "global"},
                  {"name": "flat", "type": "flatten"},
                  {"name": "fc", "type": "dense", "units": 3}]}


@pytest.mark.integration
@pytest.mark.parametrize("board, smlad", [(BOARD, True), ("lm3s6965evb", False)])
def test_simd_form_is_bit_exact_on_the_core(tmp_path: Path, board: str, smlad: bool) -> None:
    """The simd form on the target: SMLAD on SXTB16 pairs on the Cortex-M4 (the
    instructions are in the ELF), the helper's plain C on the Cortex-M3 (no DSP extension:
    none); the output bit-exact against numpy in both (a mismatch names the first wrong
    layer)."""
    from slicert_ops.firmware import RuntimeOptions
    from slicert_ops.network import (
        LayerSchedule,
        build_network_firmware,
        extract_tasks,
        run_network,
    )
    from slicert_ops.network.tasks import FORM_SIMD, resolve

    net = load_network({"experiment": {"name": "s", "model": SIMD_MODEL}}, board=board)
    tasks = extract_tasks(net)
    scheds = {t.key: resolve(t, LayerSchedule(form=FORM_SIMD, unroll=2 if t.type == "conv2d"
                                              else None))
              for t in tasks if t.type in ("conv2d", "dense")}
    assert len(scheds) == 3
    nb = build_network_firmware(net, tmp_path / "fw", tasks=tasks, schedules=scheds,
                                runtime_options=RuntimeOptions(cpu_mhz=120), board=board)
    run = run_network(nb, tmp_path / "run")
    assert run.correct, run.mismatch
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(nb.elf)], capture_output=True,
                         text=True, check=True).stdout
    assert ("smlad" in dis and "sxtb16" in dis) == smlad
