"""Whole networks end to end: TVM kernels + network harness -> arm-none-eabi-gcc -> QEMU
(lm3s6965evb, cycle plugin), output checked against numpy (int8 bit-exact), layer events."""

from __future__ import annotations

import numpy as np
import pytest

from slicert_ops.firmware import RuntimeOptions
from slicert_ops.network import (
    LAYER_END,
    LAYER_START,
    LayerSchedule,
    build_network_firmware,
    extract_tasks,
    load_network,
    run_network,
)
from slicert_ops.network import reference as ref_mod

pytestmark = pytest.mark.integration

IRQ = dict(slice_us=50, irq_load=True, irq_period_us=200, irq_jitter_us=50,
           rt_work_iters=200, rt_deadline_us=200)


@pytest.fixture(scope="module", autouse=True)
def runtime_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SLICERT_CACHE_DIR", str(tmp_path_factory.mktemp("slicert-cache")))
    yield
    mp.undo()


def every_layer_type(dtype: str) -> dict:
    return {"experiment": {"name": "all_layers", "model": {
        "name": "all_layers", "dtype": dtype, "input": [1, 12, 10, 3], "seed": 4, "layers": [
            {"name": "c1", "type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
            {"name": "r1", "type": "relu"},
            {"name": "dw", "type": "depthwise_conv2d", "kernel": 3, "stride": 2,
             "padding": "same", "activation": "relu6"},
            {"name": "pw", "type": "conv2d", "filters": 8, "kernel": 1},
            {"name": "mp", "type": "max_pool", "pool": 2, "inputs": ["r1"]},
            {"name": "sum", "type": "add", "inputs": ["mp", "pw"], "activation": "relu"},
            {"name": "ap", "type": "avg_pool", "pool": 3, "stride": 2, "padding": "same"},
            {"name": "r6", "type": "relu6"},
            {"name": "flat", "type": "flatten"},
            {"name": "fc", "type": "dense", "units": 10}]}}}


def test_every_layer_type_bit_exact_with_layer_events(tmp_path):
    net = load_network(every_layer_type("int8"))
    assert [op.type for op in net.ops] == ["conv2d", "depthwise_conv2d", "conv2d", "max_pool",
                                           "add", "avg_pool", "clamp", "dense"]
    tasks = extract_tasks(net)
    pw = next(t for t in tasks if t.layer_names == ["pw"])
    nb = build_network_firmware(net, tmp_path / "fw", runtime_options=RuntimeOptions(**IRQ),
                                schedules={pw.key: LayerSchedule(tile_size=3, micro_tile=1,
                                                                 unroll=2)})
    assert nb.kernels[pw.key].micro_tiles == 9 * 4  # 6x5 output, 3x3 tiles of 1x1
    run = run_network(nb, tmp_path / "run", deadline_us=200)
    assert run.correct, run.mismatch
    assert np.array_equal(run.output, run.expected)
    evs = [e for e in run.sim.events if e.id in (LAYER_START, LAYER_END)]
    assert [(e.id, e.payload) for e in evs] == [
        (eid, i) for i in range(len(net.ops)) for eid in (LAYER_START, LAYER_END)]
    assert [row["layer"] for row in run.layers] == [op.label for op in net.ops]
    for row, op in zip(run.layers, net.ops, strict=True):
        task = next(t for t in tasks if op.index in t.ops)
        assert row["yield_checks"] == nb.kernels[task.key].micro_tiles, row
        assert 0 < row["kernel_cycles"] <= row["wall_cycles"]
    m = run.metrics
    assert m["correct"] == 1 and m["network_cycles"] == m["wall_cycles"]
    assert sum(r["wall_cycles"] for r in run.layers) <= m["wall_cycles"]
    assert m["yield_checks"] == sum(r["yield_checks"] for r in run.layers)
    assert m["rt_releases"] > 0 and m["max_preemption_latency_cycles"] > 0
    assert max(r["max_preemption_latency_cycles"] for r in run.layers) <= \
        m["max_preemption_latency_cycles"]
    assert nb.plan.arena_bytes > 0 and f"slicert_nn_arena[{nb.plan.arena_bytes}]" in nb.c_source
    # run-folder documents
    from slicert_ops.network import network_artifacts

    art = network_artifacts(nb, run, candidate_id="abc", repeat=0, seed=0)
    trace = art["qemu_trace.json"]
    types = [e["type"] for e in trace["events"]]
    assert types.count("layer_start") == types.count("layer_end") == len(net.ops)
    assert trace["layers"][3]["schedule"]["task"] in nb.kernels
    assert trace["layers"][2]["schedule"]["tile_size"] == 3
    assert trace["network"]["memory"]["arena_bytes"] == nb.plan.arena_bytes
    assert art["cycles"]["network_cycles"] == m["wall_cycles"]
    assert len(art["tvm_config.json"]["tasks"]) == len(tasks)


def test_float32_network_within_tolerance(tmp_path):
    net = load_network(every_layer_type("float32"))
    nb = build_network_firmware(net, tmp_path / "fw", runtime_options=RuntimeOptions())
    run = run_network(nb, tmp_path / "run")
    assert run.correct, run.mismatch
    np.testing.assert_allclose(run.output, run.expected, rtol=1e-4, atol=1e-4)


def test_a_mismatch_names_the_first_wrong_layer(tmp_path, monkeypatch):
    net = load_network(every_layer_type("int8"))
    nb = build_network_firmware(net, tmp_path / "fw", runtime_options=RuntimeOptions())
    real_add = ref_mod.add_int8

    def off_by_one(*a, **kw):  # the reference (not the firmware) is wrong from the add on
        out = real_add(*a, **kw).astype(np.int16)
        return np.clip(out + 1, -128, 127).astype(np.int8)

    monkeypatch.setattr(ref_mod, "add_int8", off_by_one)
    run = run_network(nb, tmp_path / "run")
    assert not run.correct
    assert run.first_wrong_layer == "sum"
    assert "first wrong layer: sum (op 4, add)" in run.mismatch


def test_a_task_measured_alone_matches_its_layer_in_the_network(tmp_path):
    from slicert_ops.network import measure_task

    net = load_network(every_layer_type("int8"))
    nb = build_network_firmware(net, tmp_path / "fw", runtime_options=RuntimeOptions())
    full = run_network(nb, tmp_path / "run")
    assert full.correct
    for label in ("pw", "sum"):  # a conv and the two-input add (second input const in flash)
        task = next(t for t in extract_tasks(net) if t.layer_names == [label])
        alone = measure_task(net, task, tmp_path / label, runtime_options=RuntimeOptions())
        assert alone.correct, alone.mismatch
        row = alone.layers[0]
        in_net = next(r for r in full.layers if r["layer"] == label)
        assert row["yield_checks"] == in_net["yield_checks"]
        assert abs(row["kernel_cycles"] - in_net["kernel_cycles"]) <= \
            0.02 * in_net["kernel_cycles"], (row, in_net)


def test_tune_network_picks_per_task_schedules_and_runs_end_to_end(tmp_path):
    from slicert_ops.network.tune import select_schedule, tune_network

    manifest = every_layer_type("int8")
    manifest["experiment"]["parameters"] = {
        "layers": {"c1": {"tile_size": [4, 10], "micro_tile": [1, 2], "unroll": [2, 8]}}}
    net = load_network(manifest)
    res = tune_network(net, tmp_path, parameters=manifest["experiment"]["parameters"],
                       runtime_options=RuntimeOptions(**IRQ), deadline_us=200)
    c1 = next(t for t in res.tasks if t.layer_names == ["c1+r1"])
    tried = [t for t in res.trials if t.task == c1.key]
    assert len(tried) == 8 and all(t.correct for t in tried)
    fastest = min(tried, key=lambda t: t.kernel_cycles)
    assert res.schedules[c1.key] == fastest.schedule
    # micro_tile 2 (4 pixels per yield check) has longer granules than micro_tile 1
    by = {(t.schedule.micro_tile, t.schedule.unroll, t.schedule.tile_size): t for t in tried}
    for u in (2, 8):
        for tile in (4, 10):
            assert by[(2, u, tile)].max_granule_cycles > by[(1, u, tile)].max_granule_cycles
            assert by[(2, u, tile)].yield_checks * 4 >= by[(1, u, tile)].yield_checks
    # a granule bound below the fastest one's picks another schedule within the bound
    bound = fastest.max_granule_cycles - 1
    pick, met = select_schedule(tried, bound)
    if met:
        assert pick is not fastest and pick.max_granule_cycles <= bound
    finest = min(tried, key=lambda t: (t.max_granule_cycles, t.kernel_cycles))
    assert select_schedule(tried, 1) == (finest, False)
    # the end-to-end run uses the picks: same granule count, sum of tasks ~ measured total
    assert res.run.correct
    row = next(r for r in res.run.layers if r["layer"] == "c1+r1")
    assert row["yield_checks"] == fastest.yield_checks
    assert res.predicted_cycles <= res.run.metrics["kernel_cycles"] * 1.05
