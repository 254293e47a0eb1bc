"""The numpy reference of every layer type against scalar loops transcribed from TFLite's
reference integer kernels (tensorflow/lite/kernels/internal/reference/integer_ops/*.h)."""

from __future__ import annotations

import numpy as np
import pytest
from test_network_quant import tfl_mbqm, wrap32

from slicert_ops.network import quant
from slicert_ops.network import reference as ref
from slicert_ops.network.spec import same_padding


def _requant_params(rng, k):
    reals = 10 ** rng.uniform(-4, -1.5, k)
    pairs = [quant.quantize_multiplier(float(r)) for r in reals]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def naive_conv(x, w, bias, mult, shift, in_zp, out_zp, lo, hi, stride, pads, out_hw,
               depthwise=False, dm=1):
    n, h, wd, c = x.shape
    oh, ow = out_hw
    k = w.shape[-1]
    kh, kw = w.shape[:2]
    out = np.zeros((n, oh, ow, k), np.int8)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(k):
                    iy0, ix0 = oy * stride[0] - pads[0], ox * stride[1] - pads[2]
                    acc = 0
                    for fy in range(kh):
                        for fx in range(kw):
                            iy, ix = iy0 + fy, ix0 + fx
                            if not (0 <= iy < h and 0 <= ix < wd):
                                continue
                            if depthwise:
                                ic = oc // dm
                                acc += int(w[fy, fx, oc]) * (int(x[b, iy, ix, ic]) - in_zp)
                            else:
                                for ic in range(c):
                                    acc += int(w[fy, fx, ic, oc]) * (int(x[b, iy, ix, ic]) - in_zp)
                    acc += int(bias[oc])
                    acc = tfl_mbqm(acc, int(mult[oc]), int(shift[oc])) + out_zp
                    out[b, oy, ox, oc] = min(max(acc, lo), hi)
    return out


@pytest.mark.parametrize("shape, kernel, stride, padding, k, depthwise, dm", [
    ((1, 7, 6, 3), (3, 3), (1, 1), "same", 4, False, 1),
    ((1, 9, 8, 2), (5, 3), (2, 2), "same", 3, False, 1),
    ((1, 8, 8, 3), (2, 2), (2, 1), (1, 0, 0, 1), 2, False, 1),
    ((1, 6, 7, 4), (3, 3), (1, 1), "same", 4, True, 1),
    ((1, 9, 9, 3), (3, 3), (2, 2), "same", 6, True, 2),
])
def test_conv_and_depthwise_match_tflite_loops(shape, kernel, stride, padding, k, depthwise, dm):
    rng = np.random.default_rng(sum(shape) + k)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    wshape = (*kernel, k) if depthwise else (*kernel, shape[3], k)
    w = rng.integers(-127, 128, wshape, dtype=np.int8)
    bias = rng.integers(-5000, 5000, k).astype(np.int32)
    mult, shift = _requant_params(rng, k)
    if padding == "same":
        oh, pt, pb = same_padding(shape[1], kernel[0], stride[0])
        ow, pl, pr = same_padding(shape[2], kernel[1], stride[1])
        pads = (pt, pb, pl, pr)
    else:
        pads = padding
        oh = (shape[1] + pads[0] + pads[1] - kernel[0]) // stride[0] + 1
        ow = (shape[2] + pads[2] + pads[3] - kernel[1]) // stride[1] + 1
    kw = dict(in_zp=-7, out_zp=5, act_min=-100, act_max=120)
    got = ref.conv2d_int8(x, w, bias, mult, shift, stride=stride, pads=pads, out_hw=(oh, ow),
                          depthwise=depthwise, depth_multiplier=dm, **kw)
    want = naive_conv(x, w, bias, mult, shift, -7, 5, -100, 120, stride, pads, (oh, ow),
                      depthwise, dm)
    assert np.array_equal(got, want)
    assert len(np.unique(got)) > 10  # not a saturated, meaningless comparison


def test_dense_matches_tflite_loops():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 37), dtype=np.int8)
    w = rng.integers(-127, 128, (11, 37), dtype=np.int8)
    bias = rng.integers(-3000, 3000, 11).astype(np.int32)
    mult, shift = _requant_params(rng, 11)
    got = ref.dense_int8(x, w, bias, mult, shift, in_zp=3, out_zp=-4, act_min=-128, act_max=127)
    for u in range(11):
        acc = sum(int(w[u, i]) * (int(x[0, i]) - 3) for i in range(37)) + int(bias[u])
        v = min(max(tfl_mbqm(acc, int(mult[u]), int(shift[u])) - 4, -128), 127)
        assert got[0, u] == v


@pytest.mark.parametrize("pool, stride, padding", [((2, 2), (2, 2), "valid"),
                                                   ((3, 3), (2, 2), "same"),
                                                   ((3, 2), (1, 1), "same"),
                                                   ((24, 5), (24, 5), "valid")])
def test_pools_match_tflite_loops(pool, stride, padding):
    rng = np.random.default_rng(11)
    shape = (1, 25, 5, 3) if pool == (24, 5) else (1, 7, 8, 3)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    h, w = shape[1:3]
    if padding == "same":
        oh, pt, pb = same_padding(h, pool[0], stride[0])
        ow, pl, pr = same_padding(w, pool[1], stride[1])
    else:
        pt = pb = pl = pr = 0
        oh, ow = (h - pool[0]) // stride[0] + 1, (w - pool[1]) // stride[1] + 1
    geo = dict(kernel=pool, stride=stride, pads=(pt, pb, pl, pr), out_hw=(oh, ow))
    avg = ref.avg_pool_int8(x, act_min=-120, act_max=127, **geo)
    mx = ref.max_pool_int8(x, act_min=-128, act_max=100, **geo)
    for oy in range(oh):
        for ox in range(ow):
            for c in range(shape[3]):
                iy0, ix0 = oy * stride[0] - pt, ox * stride[1] - pl
                fy0, fy1 = max(0, -iy0), min(pool[0], h - iy0)
                fx0, fx1 = max(0, -ix0), min(pool[1], w - ix0)
                acc, cnt, best = 0, 0, -128
                for fy in range(fy0, fy1):
                    for fx in range(fx0, fx1):
                        v = int(x[0, iy0 + fy, ix0 + fx, c])
                        acc += v
                        cnt += 1
                        best = max(best, v)
                half = cnt // 2
                a = (acc + half) if acc > 0 else (acc - half)
                a = abs(a) // cnt * (1 if a >= 0 else -1)
                assert avg[0, oy, ox, c] == min(max(a, -120), 127)
                assert mx[0, oy, ox, c] == min(max(best, -128), 100)


def test_add_matches_tflite_loops():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, 500, dtype=np.int8)
    b = rng.integers(-128, 128, 500, dtype=np.int8)
    p = quant.add_params(0.05, 0.021, 0.06)
    got = ref.add_int8(a, b, a_zp=-3, b_zp=10, out_zp=-1, act_min=-128, act_max=127, **p)
    for i in range(500):
        sa = wrap32((int(a[i]) + 3) * (1 << 20))
        sb = wrap32((int(b[i]) - 10) * (1 << 20))
        ra = tfl_mbqm(sa, p["a_mult"], p["a_shift"])
        rb = tfl_mbqm(sb, p["b_mult"], p["b_shift"])
        raw = tfl_mbqm(ra + rb, p["out_mult"], p["out_shift"]) - 1
        assert got[i] == min(max(raw, -128), 127)
    # and it approximates real addition
    real = 0.05 * (a.astype(float) + 3) + 0.021 * (b.astype(float) - 10)
    approx = 0.06 * (got.astype(float) + 1)
    inside = np.abs(real) < 0.06 * 120
    assert np.max(np.abs(real - approx)[inside]) <= 0.06


def test_float_reference_layers():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    got = ref.conv2d_f32(x, w, b, act_min=0.0, act_max=6.0, stride=(1, 1), pads=(1, 1, 1, 1),
                         out_hw=(5, 5))
    xp = np.pad(x[0].astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    for y in range(5):
        for xx in range(5):
            v = np.einsum("hwc,hwck->k", xp[y:y + 3, xx:xx + 3], w) + b
            assert np.allclose(got[0, y, xx], np.clip(v, 0, 6), atol=1e-5)
    avg = ref.avg_pool_f32(x, kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1), out_hw=(3, 3))
    assert np.isclose(avg[0, 0, 0, 0], x[0, :2, :2, 0].mean())
