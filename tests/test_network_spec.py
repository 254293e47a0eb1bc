"""Network description, checks, fusion, tasks, schedule spaces and the memory plan (no TVM)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from slicert_ops.errors import InputError
from slicert_ops.network import (
    NetworkError,
    check_board,
    extract_tasks,
    load_network,
    make_network,
    parse_network,
    plan_memory,
    run_reference,
    task_spaces,
)
from slicert_ops.network.memory import check_plan
from slicert_ops.network.models import MODEL_BOARDS, MODELS
from slicert_ops.network.tasks import LayerSchedule, check_schedule, default_schedule


def small(dtype="int8", **extra):
    return {"name": "small", "dtype": dtype, "input": [1, 10, 10, 3], "seed": 1, "layers": [
        {"name": "c1", "type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
        {"name": "r1", "type": "relu"},
        {"name": "c2", "type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
        {"name": "c3", "type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
        {"name": "sum", "type": "add", "inputs": ["r1", "c3"], "activation": "relu6"},
        {"name": "dw", "type": "depthwise_conv2d", "kernel": 3, "stride": 2, "padding": 1},
        {"name": "mp", "type": "max_pool", "pool": 2},
        {"name": "flat", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 5},
        {"name": "r2", "type": "relu"},
    ], **extra}


def problems(model, **kw):
    with pytest.raises(NetworkError) as ei:
        parse_network(model, **kw)
    return ei.value.problems


def test_shapes_are_inferred():
    spec = parse_network(small())
    shapes = {ly.name: ly.out_shape for ly in spec.layers}
    assert shapes == {"c1": (1, 10, 10, 8), "r1": (1, 10, 10, 8), "c2": (1, 10, 10, 8),
                      "c3": (1, 10, 10, 8), "sum": (1, 10, 10, 8), "dw": (1, 5, 5, 8),
                      "mp": (1, 2, 2, 8), "flat": (1, 32), "fc": (1, 5), "r2": (1, 5)}
    assert spec.layer("dw").padding == (1, 1, 1, 1)
    # TFLite SAME with an even kernel and stride 2: pad (before, after) = (0, 1) on 7
    s2 = parse_network({"input": [1, 7, 7, 1], "layers": [
        {"type": "conv2d", "filters": 1, "kernel": [4, 2], "stride": 2, "padding": "same"}]})
    assert s2.layers[0].out_shape == (1, 4, 4, 1)
    assert s2.layers[0].padding == (1, 2, 0, 1)


def test_macs_and_params():
    spec = parse_network(small())
    c1 = spec.layer("c1")
    assert c1.macs == 10 * 10 * 8 * 27 and c1.params == 27 * 8 + 8
    assert spec.layer("dw").macs == 5 * 5 * 8 * 9
    assert spec.layer("fc").params == 32 * 5 + 5


def test_errors_name_layer_field_and_fix():
    m = small()
    m["layers"][2] = {"name": "c2", "type": "conv3d", "filters": 8}
    m["layers"][6]["colour"] = "red"
    m["layers"].insert(1, {"name": "oops", "type": "dense", "units": 3})
    ps = problems(m, source="x.yaml")
    text = "\n".join(map(str, ps))
    assert len(ps) == 3  # layers reading a broken layer are not reported again
    assert "experiment.model.layers[1].inputs (layer 'oops'): a dense layer needs a " \
           "[N, features] input" in text and "flatten" in text
    assert "layers[3].type (layer 'c2'): unknown layer type 'conv3d' (valid: conv2d" in text
    assert "layers[7].colour (layer 'mp'): unknown field" in text
    m = small()
    m["layers"][0]["kernel"] = 0
    m["layers"][5]["stride"] = [1, 2, 3]
    text = "\n".join(map(str, problems(m)))
    assert "layers[0].kernel (layer 'c1'): 0 must be a positive integer or [KH, KW]" in text
    m = small()
    m["layers"][5]["stride"] = [1, 2, 3]
    m["layers"][0]["kernel"] = 11
    m["layers"][0]["padding"] = 0
    text = "\n".join(map(str, problems(m)))
    assert "layers[0].kernel (layer 'c1'): kernel 11x11 is larger than the padded input " \
           "10x10" in text


def test_shape_mismatch_and_unknown_input():
    m = small()
    m["layers"][4]["inputs"] = ["dw_missing", "c3"]
    ps = problems(m)
    assert "dw_missing: no earlier layer has that name" in str(ps[0])
    m = small()
    m["layers"][3]["filters"] = 4
    ps = problems(m)
    assert any("shape mismatch: r1 is [1, 10, 10, 8] but c3 is [1, 10, 10, 4]" in str(p)
               and "projection" in str(p) for p in ps)


def test_softmax_and_onnx_are_explained():
    m = small()
    m["layers"].append({"type": "softmax"})
    assert "softmax is not implemented" in str(problems(m)[0])
    m = small()
    m["onnx"] = "model.onnx"
    assert "read by load_network" in str(problems(m)[0])


def test_network_error_is_an_input_error_listing_everything():
    m = small()
    m["layers"][0]["filters"] = -1
    m["dtype"] = "int4"
    with pytest.raises(InputError) as ei:
        parse_network(m, source="nets/a.yaml")
    assert str(ei.value).startswith("nets/a.yaml: 2 problems")
    assert ei.value.exit_code == 2


def test_relu_fusion_flatten_alias_and_standalone_clamp():
    net = make_network(parse_network(small()))
    labels = [op.label for op in net.ops]
    assert labels == ["c1+r1", "c2", "c3", "sum", "dw", "mp", "fc+r2"]
    assert net.aliases["flat"] == "mp" and net.aliases["r1"] == "c1"
    m = small()
    m["layers"].insert(7, {"name": "r3", "type": "relu"})   # after a max_pool: not fusible
    net = make_network(parse_network(m))
    assert [op.type for op in net.ops][-3:] == ["max_pool", "clamp", "dense"]


def test_seeded_weights_are_deterministic_and_quantised():
    a = make_network(parse_network(small()))
    b = make_network(parse_network(small()))
    c = make_network(parse_network(dict(small(), seed=2)))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    op = a.ops[0]
    assert op.arrays["weight"].dtype == np.int8 and op.arrays["bias"].dtype == np.int32
    assert op.arrays["mult"].min() >= 2**30 and op.arrays["shift"].max() <= 0
    assert a.tensors["mp"].scale == a.tensors["dw"].scale  # pooling keeps its input's params
    outs = run_reference(a, a.make_input())
    assert outs["fc"].dtype == np.int8 and len(np.unique(outs["c2"])) > 20
    f = make_network(parse_network(small("float32")))
    assert f.ops[0].arrays["weight"].dtype == np.float32
    assert run_reference(f, f.make_input())["fc"].dtype == np.float32


def test_identical_layers_share_a_task():
    net = make_network(parse_network(small()))
    tasks = extract_tasks(net)
    shared = [t for t in tasks if len(t.ops) > 1]
    assert len(shared) == 1 and shared[0].layer_names == ["c2", "c3"]
    assert len(tasks) == len(net.ops) - 1
    # c1 differs (3 input channels); a per-name space splits c3 off
    tasks2 = extract_tasks(net, per_layer={"c3"})
    assert len(tasks2) == len(net.ops)


def test_schedule_spaces_per_type_and_per_layer():
    net = make_network(parse_network(small()))
    params = {"conv2d": {"tile_size": [2, 5, 20], "unroll": [1, 2, 3]},
              "layers": {"c3": {"tile_size": [10], "micro_tile": [1, 2]}},
              "max_pool": {"micro_tile": [1]}, "slice": [64]}
    tasks, spaces, probs = task_spaces(net, params)
    assert probs == []
    by = {t.layer_names[0]: spaces[t.key] for t in tasks}
    assert {(s.tile_size, s.unroll) for s in by["c1+r1"]} == {(2, 1), (2, 2), (5, 1), (5, 2)}
    assert {(s.tile_size, s.micro_tile) for s in by["c3"]} == {(10, 1), (10, 2)}
    assert by["mp"] == [LayerSchedule(micro_tile=1, channel_tile=8)]
    _, _, probs = task_spaces(net, {"conv2d": {"tile_size": [64]}, "conv9": {},
                                    "layers": {"nope": {"unroll": [1]}},
                                    "dense": {"colour": [1]}})
    text = "; ".join(map(str, probs))
    assert "experiment.parameters.conv9: unknown key" in text
    assert "experiment.parameters.layers.nope: no layer has that name" in text
    assert "experiment.parameters.dense.colour: not a schedule parameter of dense" in text
    assert "experiment.parameters.conv2d" in text and "tile_size: 64 is larger" in text


def test_big_layers_get_a_channel_split_granule():
    from slicert_ops.network.models import resnet8
    from slicert_ops.network.tasks import micro_tiles, resolve

    net = make_network(parse_network(resnet8()))
    task = next(t for t in extract_tasks(net) if t.layer_names == ["s3_conv_b"])
    d = default_schedule(task)  # one pixel x 64 channels x 576 = 36864 MACs: too coarse
    assert d.micro_tile == 1 and d.channel_tile == 4 and d.channel_tile % d.unroll == 0
    assert micro_tiles(task, d) == 8 * 8 * 16
    assert check_schedule(task, LayerSchedule(unroll=8)) == []
    assert resolve(task, LayerSchedule(unroll=8)).channel_tile == 8
    assert "channel_tile: 5 does not divide" in check_schedule(
        task, LayerSchedule(channel_tile=5))[0]
    assert "unroll: 4 does not divide channel_tile 2" in check_schedule(
        task, LayerSchedule(channel_tile=2, unroll=4))[0]


def test_default_schedules_are_valid_for_every_reference_model():
    for name, build in MODELS.items():
        net = make_network(parse_network(build()))
        for task in extract_tasks(net):
            assert check_schedule(task, default_schedule(task)) == [], (name, task.layer_names)


def test_memory_plan_reuses_and_never_overlaps_live_tensors():
    net = make_network(parse_network(small()))
    plan = plan_memory(net)
    check_plan(net, plan)
    assert plan.arena_bytes < plan.naive_bytes
    assert plan.peak_live_bytes <= plan.arena_bytes
    assert "sum" in plan.in_place  # the add writes over one of its inputs (both die there)
    assert plan.allocations["sum"].offset in (plan.allocations["c1"].offset,
                                              plan.allocations["c3"].offset)
    assert "fc" not in plan.allocations  # the last op writes the output buffer
    no_ip = plan_memory(net, in_place=False)
    check_plan(net, no_ip)
    assert no_ip.arena_bytes >= plan.arena_bytes


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_models_figures_and_boards(name):
    net = make_network(parse_network(MODELS[name]()))
    plan = plan_memory(net)
    check_plan(net, plan)
    expected = {"ds_cnn_kws": (2_656_768, 22_604, 16_000),
                "resnet8": (12_501_632, 77_706, 49_152),
                "mobilenet_v1_vww": (7_489_664, 210_850, 55_296),
                "fc_autoencoder": (264_192, 265_864, 264)}[name]
    assert (net.macs, net.params, plan.arena_bytes) == expected
    fits_small = check_board(net, plan, "lm3s6965evb") == []
    assert fits_small == (MODEL_BOARDS[name] == "lm3s6965evb")
    assert check_board(net, plan, "mps2-an385") == []


def test_too_big_for_lm3s6965_suggests_mps2_an385():
    from slicert_ops.network.models import fc_autoencoder, mobilenet_v1_vww

    for model in (fc_autoencoder(), mobilenet_v1_vww()):
        with pytest.raises(NetworkError) as ei:
            load_network({"experiment": {"name": "x", "model": model}}, "experiments/x.yaml")
        msg = str(ei.value)
        assert msg.startswith("experiments/x.yaml: experiment.model: the network needs")
        assert "lm3s6965evb" in msg and "set runner.board: mps2-an385" in msg
    big_ram = {"input": [1, 64, 64, 8], "layers": [
        {"name": "wide", "type": "conv2d", "filters": 16, "kernel": 3, "padding": "same"},
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}]}
    with pytest.raises(NetworkError) as ei:
        load_network({"model": big_ram})
    assert "bytes of RAM" in str(ei.value) and "largest activation is wide" in str(ei.value)
    assert load_network({"model": big_ram, "runner": {"board": "mps2-an385"}}).macs > 0


def test_importing_the_package_does_not_import_tvm():
    import subprocess

    code = ("import sys, slicert_ops.network as n; n.load_network({'model': "
            "__import__('slicert_ops.network.models', fromlist=['x']).ds_cnn_kws()}); "
            "print('tvm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_example_manifests_are_current_and_load():
    from pathlib import Path

    import yaml

    from slicert_ops.network import examples

    assert examples.main(["--check"]) == 0
    files = sorted(Path(examples.DEFAULT_DIR).glob("*.yaml"))
    assert len(files) == len(examples.FILES)
    for path in files:
        manifest = yaml.safe_load(path.read_text())
        net = load_network(manifest, path)
        assert net.macs > 0
        board = manifest["experiment"]["runner"]["board"]
        assert check_board(net, plan_memory(net), board) == []


def test_layer_features_same_keys_for_every_type_and_follow_the_schedule():
    from slicert_ops.network.features import layer_feature_names, layer_features
    from slicert_ops.network.models import random_network

    names = layer_feature_names()
    seen = set()
    for seed in range(6):
        net = make_network(parse_network(random_network(seed)))
        for task in extract_tasks(net):
            f = layer_features(task, default_schedule(task))
            assert list(f) == names and all(isinstance(v, float) for v in f.values())
            assert f[f"is_{task.type}"] == 1.0
            seen.add(task.type)
    assert {"conv2d", "dense", "add"} <= seen
    task = next(t for t in extract_tasks(make_network(parse_network(small())))
                if t.type == "conv2d")
    a = layer_features(task, LayerSchedule(tile_size=10, micro_tile=1))
    b = layer_features(task, LayerSchedule(tile_size=10, micro_tile=5))
    assert a["yield_checks"] == 25 * b["yield_checks"] and a["macs"] == b["macs"]
    assert a["granule_bytes"] < b["granule_bytes"]
