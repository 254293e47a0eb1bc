"""Every layer type's TVM kernel against the numpy reference, bit-exact (int8) / within a
tolerance (float32), compiled by the host gcc from the generated C (real TVM, real gcc, the
real runtime headers and requantisation helper). Unseen shapes and several schedules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slicert_ops.network import (
    LayerSchedule,
    extract_tasks,
    generate_layer_kernel,
    make_network,
    parse_network,
    run_reference,
)
from slicert_ops.network.host import run_op_host
from slicert_ops.network.packing import pack_arrays, packed_weight_shape
from slicert_ops.network.tasks import FORM_SIMD, check_schedule, flat_pixels, micro_tiles

pytestmark = pytest.mark.integration


def one_layer(layer: dict, input_shape, dtype: str, seed: int = 3, before: list | None = None):
    layers = list(before or []) + [dict(layer, name="target")]
    return make_network(parse_network({"name": "t", "dtype": dtype, "input": input_shape,
                                       "seed": seed, "layers": layers}))


def check(net, sched: LayerSchedule | None = None, target: str = "target"):
    values = run_reference(net, net.make_input())
    op = next(o for o in net.ops if o.name == target)
    task = next(t for t in extract_tasks(net) if op.index in t.ops)
    kernel = generate_layer_kernel(task, sched)
    ins = [values[t].reshape(op.layer.in_shapes[i]) for i, t in enumerate(op.inputs)]
    got, yields = run_op_host(net, op, kernel, ins)
    want = values[op.output]
    if net.dtype == "int8":
        assert np.array_equal(got, want), f"{np.sum(got != want)} of {got.size} differ"
        assert len(np.unique(want)) >= min(5, want.size // 3)  # a meaningful comparison
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert yields == kernel.micro_tiles == micro_tiles(task, kernel.schedule)
    calls = [ln for ln in kernel.c_source.splitlines() if ln.strip() == "slicert_yield_check();"]
    assert len(calls) == 1  # one call site, in the micro-tile loop
    return kernel


DTYPES = ["int8", "float32"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, layer, sched", [
    ([1, 9, 9, 3], {"type": "conv2d", "filters": 6, "kernel": 3, "padding": "same",
                    "activation": "relu"}, LayerSchedule(4, 2, 3)),
    ([1, 11, 7, 2], {"type": "conv2d", "filters": 4, "kernel": [5, 3], "stride": [2, 1],
                     "padding": "same"}, None),
    ([1, 8, 8, 5], {"type": "conv2d", "filters": 8, "kernel": 1}, LayerSchedule(8, 8, 8)),
    ([1, 10, 6, 4], {"type": "conv2d", "filters": 4, "kernel": [4, 2], "stride": 2,
                     "padding": [1, 2, 0, 1], "activation": "relu6"}, LayerSchedule(3, 1, 2)),
    ([1, 7, 7, 3], {"type": "conv2d", "filters": 12, "kernel": 3, "padding": "same"},
     LayerSchedule(tile_size=4, micro_tile=2, unroll=2, channel_tile=6)),
    ([1, 4, 4, 64], {"type": "conv2d", "filters": 32, "kernel": 3, "padding": "same"}, None),
])
def test_conv2d(dtype, shape, layer, sched):
    check(one_layer(layer, shape, dtype), sched)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, layer, sched", [
    ([1, 9, 9, 4], {"type": "depthwise_conv2d", "kernel": 3, "padding": "same",
                    "activation": "relu"}, LayerSchedule(4, 4, 2)),
    ([1, 10, 7, 3], {"type": "depthwise_conv2d", "kernel": [3, 5], "stride": 2,
                     "padding": "same", "depth_multiplier": 2}, None),
    ([1, 6, 6, 8], {"type": "depthwise_conv2d", "kernel": 1}, LayerSchedule(2, 1, 1)),
    ([1, 6, 6, 8], {"type": "depthwise_conv2d", "kernel": 3, "padding": "same"},
     LayerSchedule(tile_size=3, micro_tile=3, unroll=1, channel_tile=2)),
])
def test_depthwise_conv2d(dtype, shape, layer, sched):
    check(one_layer(layer, shape, dtype), sched)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in, layer, sched", [
    (37, {"type": "dense", "units": 13, "activation": "relu"}, LayerSchedule(8, 2, 1)),
    (64, {"type": "dense", "units": 10}, LayerSchedule(5, 5, 16, form=0)),  # reduction unroll
    (16, {"type": "dense", "units": 3}, None),
])
def test_dense(dtype, n_in, layer, sched):
    check(one_layer(layer, [1, n_in], dtype), sched)


FORM_CASES = [  # unseen shapes: strides, asymmetric padding, partial tiles and blocks
    ([1, 11, 7, 3], {"type": "conv2d", "filters": 8, "kernel": [3, 2], "stride": [2, 1],
                     "padding": [1, 0, 1, 1], "activation": "relu"}),
    ([1, 9, 5, 16], {"type": "conv2d", "filters": 12, "kernel": 1}),
    ([1, 10, 7, 6], {"type": "depthwise_conv2d", "kernel": 3, "stride": 2, "padding": "same",
                     "depth_multiplier": 2}),
    ([1, 7, 5, 8], {"type": "depthwise_conv2d", "kernel": [3, 5], "padding": "same",
                    "activation": "relu6"}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, layer", FORM_CASES)
@pytest.mark.parametrize("sched", [
    LayerSchedule(form=0, tile_size=4, micro_tile=2, unroll=2),
    LayerSchedule(form=1, tile_size=4, micro_tile=2, pixel_block=2, unroll=4),
    LayerSchedule(form=1, tile_size=3, micro_tile=3, pixel_block=3, unroll=2,
                  channel_tile=4),
    LayerSchedule(form=2, tile_size=4, micro_tile=4, pixel_block=4, unroll=2),
    LayerSchedule(form=2, tile_size=2, micro_tile=1, unroll=4),
], ids=["direct", "block-2x4", "block-3x2-channel-tile", "im2col-4x2", "im2col-1x4"])
def test_every_kernel_form_is_exact(dtype, shape, layer, sched):
    """Each kernel form (direct, register-blocked, im2col) on shapes no example has, with
    partial macro-tiles and register blocks: int8 bit-exact, the yield checks per micro-tile
    unchanged by the form (the granule)."""
    import dataclasses

    net = one_layer(layer, shape, dtype)
    k = check(net, sched)
    plain = dataclasses.replace(sched, form=0, pixel_block=None)
    assert k.micro_tiles == micro_tiles(extract_tasks(net)[0], plain)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in, units, sched", [
    (37, 13, LayerSchedule(form=1, tile_size=8, micro_tile=4, unroll=2)),
    (64, 12, LayerSchedule(form=1, tile_size=12, micro_tile=12, unroll=6)),
    (20, 7, LayerSchedule(form=1, tile_size=7, micro_tile=7, unroll=7)),
])
def test_dense_block_form_is_exact(dtype, n_in, units, sched):
    check(one_layer({"type": "dense", "units": units}, [1, n_in], dtype), sched)


def test_block_form_packs_weights_and_folds_the_zero_point():
    """The packed layout is what the kernel reads and the folded bias is bias - zp*sum(w)."""
    net = one_layer({"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
                    [1, 6, 6, 3], "int8")
    op, task = net.ops[0], extract_tasks(net)[0]
    k = generate_layer_kernel(task, LayerSchedule(form=1, tile_size=2, micro_tile=2,
                                                  pixel_block=2, unroll=4))
    packed = k.pack(op.type, op.arrays, op.scalars)
    w = op.arrays["weight"]
    assert packed["weight"].shape == (2, 3, 3, 3, 4)
    assert np.array_equal(packed["weight"][1, 2, 0, 1, 3], w[2, 0, 1, 7])
    want = op.arrays["bias"] - op.scalars["in_zp"] * w.astype(np.int64).sum(axis=(0, 1, 2))
    qp = packed["qparams"]   # per channel: folded bias, multiplier, left/right shift, mask
    assert qp.shape == (8, 5) and "bias" not in packed and "shift" not in packed
    assert np.array_equal(qp[:, 4], (1 << qp[:, 3].astype(np.int64)) - 1)
    assert np.array_equal(qp[:, 0], want) and op.scalars["in_zp"] != 0
    assert np.array_equal(qp[:, 1], op.arrays["mult"])
    shift = op.arrays["shift"]
    assert np.array_equal(qp[:, 2] - qp[:, 3], shift) and (qp[:, 2:] >= 0).all()
    assert [n for n, _ in k.params] == ["data", "weight", "qparams", "in_zp", "out_zp",
                                        "act_min", "act_max", "out"]
    direct = generate_layer_kernel(task, LayerSchedule(form=0))
    assert direct.pack(op.type, op.arrays, op.scalars) is op.arrays


POINTWISE_CASES = [  # 1x1 stride-1 unpadded convs of shapes no example has
    ([1, 9, 5, 16], 12, "relu"),
    ([1, 7, 3, 8], 6, None),
    ([1, 1, 11, 4], 20, "relu6"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, filters, act", POINTWISE_CASES)
@pytest.mark.parametrize("sched", [
    LayerSchedule(form=3, tile_size=4, micro_tile=2, pixel_block=2, unroll=2),
    LayerSchedule(form=3, tile_size=3, micro_tile=3, pixel_block=3, unroll=2,
                  reduction_unroll=2),
    LayerSchedule(form=3, tile_size=2, micro_tile=2, pixel_block=4, unroll=2, channel_tile=2,
                  reduction_unroll=1),
    LayerSchedule(form=3, tile_size=1, micro_tile=1, pixel_block=1, unroll=1),
    LayerSchedule(form=1, tile_size=1, micro_tile=1, pixel_block=1, unroll=2,
                  reduction_unroll=4),
], ids=["pw-2x2", "pw-3x2-r2", "pw-4x2-channel-tile", "pw-1x1", "block-r4"])
def test_pointwise_form_is_exact(dtype, shape, filters, act, sched):
    """The pointwise form (flat pixels: register blocks across row ends, the last block
    partial) and the reduction unrolling: bit-exact, and as many yield checks as the kernel
    says (micro_tile^2 flat pixels per micro-tile)."""
    layer = {"type": "conv2d", "filters": filters, "kernel": 1, "activation": act}
    check(one_layer(layer, shape, dtype), sched)


def test_pointwise_is_the_default_form_of_a_1x1_conv():
    net = one_layer({"type": "conv2d", "filters": 8, "kernel": 1}, [1, 6, 5, 8], "int8")
    from slicert_ops.network.tasks import resolve

    s = resolve(extract_tasks(net)[0], LayerSchedule())
    assert s.form == 3 and s.reduction_unroll == 4


def test_requantize_lr_equals_requantize(tmp_path):
    """The blocked forms' branch-free requantisation (shift split at build time) gives
    TFLite's MultiplyByQuantizedMultiplier bit for bit (slicert_nn_requantize, itself tested
    against a transcription of TFLite), for every shift and edge values of x and m."""
    import ctypes
    import subprocess

    from slicert_ops.network import quant
    from slicert_ops.network.host import ZEPHYR_INCLUDE

    src = tmp_path / "rq.c"
    src.write_text("""#include <stdint.h>
#include "slicert/network.h"
int mismatches(const int32_t *x, int nx, const int32_t *m, int nm, int32_t *first) {
  int bad = 0;
  for (int s = -31; s <= 30; s++)
    for (int j = 0; j < nm; j++)
      for (int i = 0; i < nx; i++) {
        int32_t a = slicert_nn_requantize(x[i], m[j], s);
        int32_t r = s > 0 ? 0 : -s;
        int32_t b = slicert_nn_requantize_lr(x[i], m[j], s > 0 ? s : 0, r,
                                             (int32_t)((1u << r) - 1u));
        if (a != b && bad++ == 0) { first[0] = x[i]; first[1] = m[j]; first[2] = s; }
      }
  return bad;
}
""")
    so = tmp_path / "rq.so"
    subprocess.run(["gcc", "-O2", "-fwrapv", "-shared", "-fPIC", f"-I{ZEPHYR_INCLUDE}",
                    str(src), "-o", str(so)], check=True)
    rng = np.random.default_rng(7)
    edges = [0, 1, -1, 2, -2, 2**30, -(2**30), 2**31 - 1, -(2**31), 12345, -12345]
    x = np.array(edges + list(rng.integers(-(2**31), 2**31, 400)), np.int32)
    reals = rng.uniform(1e-6, 4.0, 40)
    m = np.array([2**30, 2**31 - 1, 0, 1] + [quant.quantize_multiplier(float(r))[0]
                                              for r in reals], np.int32)
    first = np.zeros(3, np.int32)
    fn = ctypes.CDLL(str(so)).mismatches
    fn.restype = ctypes.c_int
    bad = fn(x.ctypes.data_as(ctypes.c_void_p), len(x), m.ctypes.data_as(ctypes.c_void_p),
             len(m), first.ctypes.data_as(ctypes.c_void_p))
    assert bad == 0, f"{bad} differ, first x={first[0]} m={first[1]} shift={first[2]}"


def test_impossible_form_schedules_are_refused():
    net = one_layer({"type": "conv2d", "filters": 6, "kernel": 3}, [1, 8, 8, 2], "int8")
    task = extract_tasks(net)[0]
    from slicert_ops.network.tasks import check_schedule

    assert "pixel_block: 3 does not divide micro_tile 4" in check_schedule(
        task, LayerSchedule(form=1, tile_size=4, micro_tile=4, pixel_block=3))[0]
    assert "at most 16 fit" in check_schedule(
        task, LayerSchedule(form=1, tile_size=6, micro_tile=6, pixel_block=6, unroll=6))[0]
    assert "only the blocked forms" in check_schedule(
        task, LayerSchedule(form=0, pixel_block=2))[0]
    assert "not a kernel form" in check_schedule(task, LayerSchedule(form=7))[0]
    assert "pointwise needs a 1x1 conv2d" in check_schedule(task, LayerSchedule(form=3))[0]
    assert "reduction_unroll: 4 does not divide the innermost reduction loop (2)" in \
        check_schedule(task, LayerSchedule(form=1, reduction_unroll=4))[0]
    assert "reduction_unroll: a parameter of the blocked forms" in check_schedule(
        task, LayerSchedule(form=0, reduction_unroll=2))[0]
    pw = extract_tasks(one_layer({"type": "conv2d", "filters": 4, "kernel": 1},
                                 [1, 5, 5, 4], "int8"))[0]
    assert "pixel_block: 3 does not divide the 4 pixels of micro_tile 2" in check_schedule(
        pw, LayerSchedule(form=3, tile_size=4, micro_tile=2, pixel_block=3))[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["avg_pool", "max_pool"])
@pytest.mark.parametrize("shape, extra, sched", [
    ([1, 8, 8, 3], {"pool": 2}, LayerSchedule(micro_tile=2)),
    ([1, 9, 7, 4], {"pool": 3, "stride": 2, "padding": "same"}, None),
    ([1, 5, 6, 3], {"pool": "global"}, None),
    ([1, 25, 5, 2], {"pool": [24, 5]}, None),
    ([1, 6, 6, 6], {"pool": 3, "stride": 1, "padding": "same"},
     LayerSchedule(micro_tile=2, channel_tile=3)),
    ([1, 25, 5, 64], {"pool": [24, 5]}, None),  # a row is too long: default channel split
])
def test_pooling(dtype, kind, shape, extra, sched):
    # pools read a conv output, so that their input is a realistic int8 activation
    before = [{"type": "conv2d", "filters": shape[3], "kernel": 1}]
    check(one_layer(dict(extra, type=kind), shape[:3] + [2], dtype, before=before), sched)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, sched", [(None, LayerSchedule(micro_tile=7)),
                                               ("relu", None), ("relu6", None)])
def test_residual_add(dtype, activation, sched):
    before = [{"name": "x1", "type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
              {"name": "x2", "type": "conv2d", "filters": 4, "kernel": 1}]
    layer = {"type": "add", "inputs": ["x1", "x2"], "activation": activation}
    check(one_layer(layer, [1, 6, 5, 2], dtype, before=before), sched)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["relu", "relu6"])
def test_standalone_relu(dtype, kind):
    # after a max_pool a relu cannot be fused: it runs as its own clamp kernel
    before = [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "max_pool", "pool": 2}]
    net = one_layer({"type": kind}, [1, 9, 9, 2], dtype, before=before)
    assert net.ops[-1].type == "clamp"
    check(net, LayerSchedule(micro_tile=5))


def test_identical_layers_share_one_kernel_with_their_own_quantisation():
    net = make_network(parse_network({"input": [1, 6, 6, 4], "seed": 9, "layers": [
        {"name": "a", "type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
        {"name": "b", "type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
        {"name": "c", "type": "conv2d", "filters": 4, "kernel": 3, "padding": "same",
         "activation": "relu"}]}))
    tasks = extract_tasks(net)
    assert len(tasks) == 1 and tasks[0].weight == 3
    assert net.ops[0].scalars != net.ops[1].scalars  # different zero points
    for name in "abc":
        check(net, target=name)


def test_impossible_schedule_is_refused():
    net = one_layer({"type": "conv2d", "filters": 6, "kernel": 3}, [1, 8, 8, 2], "int8")
    with pytest.raises(ValueError, match="unroll: 4 does not divide the output channels"):
        generate_layer_kernel(extract_tasks(net)[0], LayerSchedule(2, 1, 4))


@pytest.mark.parametrize("seed, dtype", [(s, "int8") for s in range(100, 105)]
                         + [(s, "float32") for s in range(200, 202)])
def test_random_networks_unseen_shapes_and_orders(seed, dtype):
    """Random layer orders and shapes (models.random_network): every op's kernel equals the
    reference on the values it sees in the network."""
    from slicert_ops.network.models import random_network

    net = make_network(parse_network(random_network(seed, dtype)))
    values = run_reference(net, net.make_input())
    for task in extract_tasks(net):
        kernel = generate_layer_kernel(task)
        for i in task.ops:
            op = net.ops[i]
            ins = [values[t].reshape(op.layer.in_shapes[j]) for j, t in enumerate(op.inputs)]
            got, yields = run_op_host(net, op, kernel, ins)
            want = values[op.output]
            if dtype == "int8":
                assert np.array_equal(got, want), (seed, op.label)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            assert yields == kernel.micro_tiles


def test_block_cost_features():
    """nf4: what a blocked form computes beyond the MACs, from the schedule alone."""
    from slicert_ops.network.features import layer_features

    pw = extract_tasks(one_layer({"type": "conv2d", "filters": 8, "kernel": 1},
                                 [1, 3, 3, 8], "int8"))[0]
    four = layer_features(pw, LayerSchedule(form=3, tile_size=2, micro_tile=2, pixel_block=4))
    two = layer_features(pw, LayerSchedule(form=3, tile_size=2, micro_tile=2, pixel_block=2))
    assert four["block_waste"] == 12 / 9 and two["block_waste"] == 10 / 9
    assert four["padded_share"] == 0.0 and four["copies_per_mac"] == 0.0
    conv = extract_tasks(one_layer({"type": "conv2d", "filters": 8, "kernel": 3,
                                    "padding": "same"}, [1, 6, 6, 2], "int8"))[0]
    f = layer_features(conv, LayerSchedule(form=2, tile_size=2, micro_tile=2, pixel_block=2,
                                           unroll=4, channel_tile=4))
    assert f["copies_per_mac"] == 1 / 4 and f["block_waste"] == 1.0
    assert f["padded_share"] == 1 - 16 / 36   # the 4x4 interior reads no padding


def test_loop_and_register_features():
    """nf6: guarded iterations of tiles that do not divide the output, and the register
    block's live values past the register file."""
    from slicert_ops.network.features import BLOCK_REGISTERS, layer_features

    dw = extract_tasks(one_layer({"type": "depthwise_conv2d", "kernel": 3, "padding": "same"},
                                 [1, 6, 6, 16], "int8"))[0]
    whole = layer_features(dw, LayerSchedule(form=1, tile_size=2, micro_tile=2, pixel_block=2,
                                             unroll=2, channel_tile=16))
    part = layer_features(dw, LayerSchedule(form=1, tile_size=4, micro_tile=2, pixel_block=2,
                                            unroll=2, channel_tile=16))
    assert whole["loop_waste"] == 1.0
    assert part["loop_waste"] == (8 / 6) ** 2      # 4-row tiles on 6 rows iterate 8
    assert whole["block_live"] == 2 * 2 + 2 + 1 and whole["block_spill"] == 0.0
    big = layer_features(dw, LayerSchedule(form=1, tile_size=2, micro_tile=2, pixel_block=2,
                                           unroll=4, channel_tile=16))
    assert big["block_spill"] == 2 * 4 + 4 + 1 - BLOCK_REGISTERS
    direct = layer_features(dw, LayerSchedule(form=0, tile_size=2, micro_tile=2,
                                              channel_tile=16))
    assert direct["block_live"] == 0.0 and direct["block_spill"] == 0.0
    fc = extract_tasks(one_layer({"type": "dense", "units": 10}, [1, 32], "int8"))[0]
    f = layer_features(fc, LayerSchedule(form=1, tile_size=4, micro_tile=4, unroll=2))
    assert f["loop_waste"] == 12 / 10 and f["block_live"] == 2 + 2 + 1

@pytest.mark.parametrize("channels, unrolled", [(8, True), (64, True), (65, False)])
def test_im2col_patch_copy_unrolls_a_tap_of_up_to_64_channels(channels, unrolled):
    """im2col copies a tap's channels unrolled (one bounds check per tap, word copies), as
    the simd form does; a tap of more than 64 channels stays a loop (code size)."""
    from tvm import tirx

    from slicert_ops.network.kernels import schedule_task
    from slicert_ops.network.tasks import resolve

    task = extract_tasks(one_layer({"type": "conv2d", "filters": 4, "kernel": 3,
                                    "padding": "same"}, [1, 4, 4, channels], "int8"))[0]
    s = resolve(task, LayerSchedule(form=2, tile_size=4, micro_tile=2, pixel_block=2,
                                    unroll=2, channel_tile=4, reduction_unroll=1))
    sch, _ = schedule_task(task, s)
    last = sch.get(sch.get_loops(sch.get_sblock("col"))[-1])
    assert int(last.extent) == channels
    assert (last.kind == tirx.ForKind.UNROLLED) is unrolled

SIMD = FORM_SIMD  # the simd form: four int8 MACs per slicert_nn_dot4 step (tensorized)
CONV_CASES = [  # (input, layer): padded, strided, C=1 and C=2 (flat patches with a zero tail),
    # C=3 (taps padded to 4 channels), the 1x1 GEMM, a 1x1 conv of 6 channels (padded to 8)
    ([1, 8, 7, 2], {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}),
    ([1, 13, 7, 1], {"type": "conv2d", "filters": 8, "kernel": [5, 3], "stride": 2,
                     "padding": "same", "activation": "relu"}),
    ([1, 9, 6, 3], {"type": "conv2d", "filters": 8, "kernel": 3, "padding": [1, 0, 1, 1]}),
    ([1, 7, 5, 8], {"type": "conv2d", "filters": 12, "kernel": 1, "activation": "relu6"}),
    ([1, 5, 4, 6], {"type": "conv2d", "filters": 4, "kernel": 1}),
    # whole channel groups: the (KH, KW, C) patch, a tap's C/4 groups innermost
    ([1, 7, 6, 8], {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same",
                    "activation": "relu"}),
    ([1, 9, 7, 12], {"type": "conv2d", "filters": 8, "kernel": 1, "stride": 2}),
]


@pytest.mark.parametrize("shape, layer", CONV_CASES)
@pytest.mark.parametrize("sched", [
    LayerSchedule(form=SIMD, tile_size=4, micro_tile=2, pixel_block=2, unroll=2),
    LayerSchedule(form=SIMD, tile_size=3, micro_tile=3, pixel_block=3, unroll=4,
                  reduction_unroll=1),
    LayerSchedule(form=SIMD, tile_size=2, micro_tile=1, pixel_block=1, unroll=2,
                  channel_tile=2),
], ids=["2x2", "3x4-r1", "1x2-channel-tile"])
def test_simd_conv2d_is_exact(shape, layer, sched):
    """Padded, strided, one input channel, a patch that is not whole groups (3x3x3), the 1x1
    GEMM and a 1x1 conv whose channels are not whole groups (an im2col patch): bit-exact, as
    many yield checks as the kernel says, the granule of the direct form's tiles."""
    net = one_layer(layer, shape, "int8")
    k = check(net, sched)
    assert "slicert_nn_dot4(" in k.c_source
    task = extract_tasks(net)[0]
    if not flat_pixels(task.signature, SIMD):   # the granule: the same pixels per yield
        plain = dataclasses.replace(sched, form=0, pixel_block=None, reduction_unroll=None)
        assert k.micro_tiles == micro_tiles(task, plain)


def test_simd_conv2d_splits_a_taps_groups_by_reduction_unroll():
    """16 channels (4 groups per tap) unrolled by 2: the group loop split below the taps."""
    net = one_layer({"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same",
                     "activation": "relu"}, [1, 5, 6, 16], "int8")
    check(net, LayerSchedule(form=SIMD, tile_size=4, micro_tile=2, pixel_block=2, unroll=2,
                             reduction_unroll=2))


@pytest.mark.parametrize("n_in, units, sched", [
    (36, 13, LayerSchedule(form=SIMD, tile_size=8, micro_tile=4, unroll=2)),
    (64, 12, LayerSchedule(form=SIMD, tile_size=12, micro_tile=12, unroll=6,
                           reduction_unroll=16)),
    (8, 7, LayerSchedule(form=SIMD, tile_size=7, micro_tile=7, unroll=7)),
])
def test_simd_dense_is_exact(n_in, units, sched):
    k = check(one_layer({"type": "dense", "units": units}, [1, n_in], "int8"), sched)
    assert "slicert_nn_dot4(" in k.c_source


def test_simd_packs_whole_groups_per_tap_or_a_flat_patch():
    """3 channels are padded to 4 per tap (3x3 taps: 9 groups, every 4th weight zero); 2
    channels (padding them would double the MACs) make one flat 3x3x2 patch of 18 bytes, 5
    groups with a zero tail. Each output's groups are a row of the packed array, as the
    kernel walks them."""
    rng = np.random.default_rng(0)
    for c, groups in ((3, 9), (2, 5)):
        w = rng.integers(-128, 128, (3, 3, c, 4), dtype=np.int8)
        sig = {"type": "conv2d", "in_shapes": [[1, 5, 5, c]], "out_shape": [1, 5, 5, 4],
               "kernel": [3, 3]}
        got = pack_arrays("conv2d", {"weight": w}, {}, 2, quantised=False,
                          form=SIMD)["weight"]
        assert got.shape == packed_weight_shape("conv2d", sig, 2, SIMD) == (2, groups, 2, 4)
        for f in range(4):
            seq = got[f // 2, :, f % 2, :].reshape(-1)
            if c == 3:
                taps = seq.reshape(9, 4)
                assert np.array_equal(taps[:, :3], w[..., f].reshape(9, 3))
                assert not taps[:, 3].any()
            else:
                assert np.array_equal(seq[:18], w[..., f].reshape(-1)) and not seq[18:].any()


def test_simd_refuses_what_it_cannot_compute():
    dw = extract_tasks(one_layer({"type": "depthwise_conv2d", "kernel": 3, "padding": "same"},
                                 [1, 6, 6, 8], "int8"))[0]
    assert "simd is a conv2d and dense form" in check_schedule(dw, LayerSchedule(form=SIMD))[0]
    f32 = extract_tasks(one_layer({"type": "conv2d", "filters": 4, "kernel": 3},
                                  [1, 6, 6, 4], "float32"))[0]
    assert "int8 pairs" in check_schedule(f32, LayerSchedule(form=SIMD))[0]
    odd = extract_tasks(one_layer({"type": "dense", "units": 4}, [1, 10], "int8"))[0]
    assert "not a multiple of 4" in check_schedule(odd, LayerSchedule(form=SIMD))[0]
    conv = extract_tasks(one_layer({"type": "conv2d", "filters": 8, "kernel": 3},
                                   [1, 8, 8, 8], "int8"))[0]
    errs = check_schedule(conv, LayerSchedule(form=SIMD, reduction_unroll=4))
    assert "the simd form's innermost reduction loop (2 4-byte groups)" in errs[0]
    big = extract_tasks(one_layer({"type": "conv2d", "filters": 8, "kernel": 5},
                                  [1, 8, 8, 64], "int8"))[0]
    assert "simd patch" in check_schedule(big, LayerSchedule(form=SIMD, tile_size=4,
                                                             micro_tile=4, pixel_block=2))[0]
    # a form that computes nothing it should not: the kernel is generated for valid ones
    assert generate_layer_kernel(conv, LayerSchedule(form=SIMD)).schedule.form == SIMD
