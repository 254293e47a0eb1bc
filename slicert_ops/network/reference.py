"""numpy reference of every layer type (host side).

int8 follows TFLite's reference integer kernels (tensorflow/lite/kernels/internal/reference/
integer_ops/*.h) bit for bit; float32 accumulates in float64 and rounds to float32 (compare
with a tolerance: the firmware sums in float32 in its own order).

Layouts: activations NHWC (or [N, F]); conv2d weights HWIO ``(KH, KW, C, K)``; depthwise
``(KH, KW, C*M)`` (output channel ``c*M + m`` reads input channel ``c``, as TFLite); dense
``(OUT, IN)``. Padding is ``(top, bottom, left, right)``; padded positions contribute nothing
(int8: the input offset is added to real pixels only, as TFLite does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .quant import (
    ADD_LEFT_SHIFT,
    INT8_MAX,
    INT8_MIN,
    multiply_by_quantized_multiplier,
)


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value: Any = 0) -> np.ndarray:
    pt, pb, pl, pr = pads
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
             out_hw: tuple[int, int]):
    """Yield (i, j, patch) with patch[n, y, x, c] = xp[n, y*sh + i, x*sw + j, c]."""
    kh, kw = kernel
    sh, sw = stride
    oh, ow = out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]


def conv_accumulate(x: np.ndarray, w: np.ndarray, stride: tuple[int, int],
                    pads: tuple[int, int, int, int], out_hw: tuple[int, int],
                    depthwise: bool = False, depth_multiplier: int = 1) -> np.ndarray:
    """sum over the window of x * w (x already offset for int8; int64 or float64)."""
    xp = _pad(x, pads)
    if depthwise and depth_multiplier > 1:
        xp = np.repeat(xp, depth_multiplier, axis=3)
    kh, kw = w.shape[:2]
    n = x.shape[0]
    k = w.shape[-1]
    acc = np.zeros((n, *out_hw, k), dtype=x.dtype)
    for i, j, patch in _windows(xp, (kh, kw), stride, out_hw):
        if depthwise:
            acc += patch * w[i, j]
        else:
            acc += np.tensordot(patch, w[i, j], axes=([3], [0]))
    return acc


def _valid_count(shape_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                 pads: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    ones = np.ones((1, *shape_hw, 1), dtype=np.int64)
    cnt = np.zeros((1, *out_hw, 1), dtype=np.int64)
    for _i, _j, patch in _windows(_pad(ones, pads), kernel, stride, out_hw):
        cnt += patch
    return cnt


# ------------------------------------------------------------------------------------------
# int8 (TFLite reference integer kernels)
# ------------------------------------------------------------------------------------------
def _requant_clamp(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, out_zp: int,
                   act_min: int, act_max: int) -> np.ndarray:
    if np.any(np.abs(acc) > 2**31 - 1):
        raise OverflowError("int32 accumulator overflow (the C kernel would wrap)")
    v = multiply_by_quantized_multiplier(acc, mult, shift) + out_zp
    return np.clip(v, act_min, act_max).astype(np.int8)


def conv2d_int8(x: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray,
                shift: np.ndarray, *, in_zp: int, out_zp: int, act_min: int, act_max: int,
                stride: tuple[int, int], pads: tuple[int, int, int, int],
                out_hw: tuple[int, int], depthwise: bool = False,
                depth_multiplier: int = 1) -> np.ndarray:
    """TFLite ConvPerChannel / DepthwiseConvPerChannel (int8)."""
    xo = x.astype(np.int64) - in_zp
    acc = conv_accumulate(xo, w.astype(np.int64), stride, pads, out_hw, depthwise,
                          depth_multiplier)
    acc = acc + bias.astype(np.int64)
    return _requant_clamp(acc, mult, shift, out_zp, act_min, act_max)


def dense_int8(x: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray,
               shift: np.ndarray, *, in_zp: int, out_zp: int, act_min: int,
               act_max: int) -> np.ndarray:
    """TFLite FullyConnected (int8, per-channel weights, filter offset 0)."""
    acc = (x.astype(np.int64) - in_zp) @ w.astype(np.int64).T + bias.astype(np.int64)
    return _requant_clamp(acc, mult, shift, out_zp, act_min, act_max)


def avg_pool_int8(x: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int],
                  pads: tuple[int, int, int, int], out_hw: tuple[int, int], act_min: int,
                  act_max: int) -> np.ndarray:
    """TFLite AveragePool (int8): sum of the valid pixels, divided by their count rounding
    half away from zero (C truncating division after adding +-count/2)."""
    acc = np.zeros((x.shape[0], *out_hw, x.shape[3]), dtype=np.int64)
    for _i, _j, patch in _windows(_pad(x.astype(np.int64), pads), kernel, stride, out_hw):
        acc += patch
    cnt = _valid_count(x.shape[1:3], kernel, stride, pads, out_hw)
    half = cnt // 2
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.abs(num) // cnt
    avg = np.where(num < 0, -q, q)
    return np.clip(avg, act_min, act_max).astype(np.int8)


def max_pool_int8(x: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int],
                  pads: tuple[int, int, int, int], out_hw: tuple[int, int], act_min: int,
                  act_max: int) -> np.ndarray:
    """TFLite MaxPool (int8): max of the valid pixels (padding never wins)."""
    out = np.full((x.shape[0], *out_hw, x.shape[3]), INT8_MIN - 1, dtype=np.int64)
    for _i, _j, patch in _windows(_pad(x.astype(np.int64), pads, INT8_MIN - 1), kernel,
                                  stride, out_hw):
        out = np.maximum(out, patch)
    return np.clip(out, act_min, act_max).astype(np.int8)


def add_int8(a: np.ndarray, b: np.ndarray, *, a_zp: int, b_zp: int, out_zp: int, a_mult: int,
             a_shift: int, b_mult: int, b_shift: int, out_mult: int, out_shift: int,
             act_min: int, act_max: int) -> np.ndarray:
    """TFLite Add (int8, reference AddElementwise): rescale both inputs to a common scale at
    2^20 resolution, add, rescale to the output."""
    sa = (a.astype(np.int64) - a_zp) * (1 << ADD_LEFT_SHIFT)
    sb = (b.astype(np.int64) - b_zp) * (1 << ADD_LEFT_SHIFT)
    ra = multiply_by_quantized_multiplier(sa, a_mult, a_shift)
    rb = multiply_by_quantized_multiplier(sb, b_mult, b_shift)
    raw = multiply_by_quantized_multiplier(ra + rb, out_mult, out_shift) + out_zp
    return np.clip(raw, act_min, act_max).astype(np.int8)


def clamp_int8(x: np.ndarray, *, act_min: int, act_max: int) -> np.ndarray:
    """Standalone ReLU/ReLU6 with equal input/output quantisation: a clamp."""
    return np.clip(x.astype(np.int64), act_min, act_max).astype(np.int8)


# ------------------------------------------------------------------------------------------
# float32
# ------------------------------------------------------------------------------------------
def _act_f(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.minimum(np.maximum(x, lo), hi)


def conv2d_f32(x: np.ndarray, w: np.ndarray, bias: np.ndarray, *, act_min: float,
               act_max: float, stride: tuple[int, int], pads: tuple[int, int, int, int],
               out_hw: tuple[int, int], depthwise: bool = False,
               depth_multiplier: int = 1) -> np.ndarray:
    acc = conv_accumulate(x.astype(np.float64), w.astype(np.float64), stride, pads, out_hw,
                          depthwise, depth_multiplier) + bias.astype(np.float64)
    return _act_f(acc, act_min, act_max).astype(np.float32)


def dense_f32(x: np.ndarray, w: np.ndarray, bias: np.ndarray, *, act_min: float,
              act_max: float) -> np.ndarray:
    acc = x.astype(np.float64) @ w.astype(np.float64).T + bias.astype(np.float64)
    return _act_f(acc, act_min, act_max).astype(np.float32)


def avg_pool_f32(x: np.ndarray, *, kernel, stride, pads, out_hw, act_min: float = -np.inf,
                 act_max: float = np.inf) -> np.ndarray:
    acc = np.zeros((x.shape[0], *out_hw, x.shape[3]), dtype=np.float64)
    for _i, _j, patch in _windows(_pad(x.astype(np.float64), pads), kernel, stride, out_hw):
        acc += patch
    cnt = _valid_count(x.shape[1:3], kernel, stride, pads, out_hw)
    return _act_f(acc / cnt, act_min, act_max).astype(np.float32)


def max_pool_f32(x: np.ndarray, *, kernel, stride, pads, out_hw, act_min: float = -np.inf,
                 act_max: float = np.inf) -> np.ndarray:
    out = np.full((x.shape[0], *out_hw, x.shape[3]), -np.inf)
    for _i, _j, patch in _windows(_pad(x.astype(np.float64), pads, -np.inf), kernel, stride,
                                  out_hw):
        out = np.maximum(out, patch)
    return _act_f(out, act_min, act_max).astype(np.float32)


def add_f32(a: np.ndarray, b: np.ndarray, *, act_min: float, act_max: float) -> np.ndarray:
    return _act_f(a.astype(np.float64) + b, act_min, act_max).astype(np.float32)


def clamp_f32(x: np.ndarray, *, act_min: float, act_max: float) -> np.ndarray:
    return _act_f(x.astype(np.float64), act_min, act_max).astype(np.float32)


INT8_CLAMP = (INT8_MIN, INT8_MAX)
