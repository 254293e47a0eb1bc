"""int8 quantisation exactly as TFLite's reference kernels (and CMSIS-NN) define it.

- Activations: per-tensor affine, ``real = scale * (q - zero_point)``, int8 in [-128, 127].
- Weights: symmetric per output channel (zero point 0), ``scale[c] = max|w[..., c]| / 127``.
- Bias: int32, ``round(b / (input_scale * weight_scale[c]))``, zero point 0.
- Requantisation: a real multiplier ``M = s_in * s_w[c] / s_out`` is encoded as a Q31
  multiplier and a shift (:func:`quantize_multiplier`, TFLite ``QuantizeMultiplier``) and applied
  with :func:`multiply_by_quantized_multiplier` (TFLite ``MultiplyByQuantizedMultiplier``:
  gemmlowp's ``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT``: the default,
  double-rounding variant of tensorflow/lite/kernels/internal/common.h).

Every integer function works on numpy arrays, in int64 internally, and reproduces the int32
C arithmetic bit for bit (wrap-around where C would wrap, truncating division where C
truncates). ``zephyr/include/slicert/network.h`` is the C twin used by the generated kernels.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: TFLite int8 ADD: inputs are shifted left by 20 bits before rescaling (add.cc, Prepare).
ADD_LEFT_SHIFT = 20


def tflite_round(x: float) -> int:
    """``std::round``: half away from zero (TfLiteRound)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier(double, int32_t*, int*)``: ``real ~= m * 2^(shift-31)``,
    ``m`` in [2^30, 2^31) (or 0). Returns ``(m, shift)``; shift > 0 is a left shift."""
    if real == 0.0:
        return 0, 0
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"real multiplier must be finite and >= 0, got {real!r}")
    q, shift = math.frexp(real)
    q_fixed = tflite_round(q * (1 << 31))
    assert q_fixed <= (1 << 31)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    assert q_fixed <= INT32_MAX
    if shift < -31:
        shift, q_fixed = 0, 0
    if shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return int(q_fixed), int(shift)


def _wrap32(x: np.ndarray) -> np.ndarray:
    """int64 -> the int32 value C would hold (two's complement wrap), as int64."""
    return ((x + 2**31) % 2**32) - 2**31


def _trunc_div(x: np.ndarray, d: int) -> np.ndarray:
    """C integer division (truncation toward zero) of an int64 array by d > 0."""
    q = np.abs(x) // d
    return np.where(x < 0, -q, q)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` (int32 x int32 -> int32)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = _trunc_div(ab + nudge, 1 << 31)
    return np.where(overflow, np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("rounding_divide_by_pot: exponent must be in 0..31")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> e) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier(int32 x, int32 m, int shift)`` (double rounding).
    Broadcasts (per-channel multipliers along the last axis). Returns int64 holding int32."""
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    shifted = _wrap32(x * (np.int64(1) << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m), right)


def choose_activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Per-tensor asymmetric int8 parameters covering [lo, hi] (TFLite post-training
    quantisation: the range is widened to include 0; zero point nudged into int8).
    The scale is a float32 value (TFLite stores float32 scales)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    scale = float(np.float32((hi - lo) / 255.0))
    zp = tflite_round(INT8_MIN - lo / scale)
    zp = max(INT8_MIN, min(INT8_MAX, zp))
    return scale, int(zp)


def quantize_tensor(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Affine quantisation of a float array to int8 (round half away from zero, clamp)."""
    q = np.sign(x) * np.floor(np.abs(x.astype(np.float64) / scale) + 0.5) + zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def per_channel_weight_scales(w: np.ndarray, axis: int = -1) -> np.ndarray:
    """Symmetric per-channel scales ``max|w| / 127`` along ``axis`` (float32)."""
    axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.max(np.abs(w), axis=axes).astype(np.float64)
    amax = np.where(amax > 0, amax, 1e-8)
    return (amax / 127.0).astype(np.float32)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int = -1) -> np.ndarray:
    """Per-channel symmetric int8 weights (range [-127, 127], as TFLite)."""
    shape = [1] * w.ndim
    shape[axis % w.ndim] = -1
    s = scales.astype(np.float64).reshape(shape)
    q = np.sign(w) * np.floor(np.abs(w.astype(np.float64) / s) + 0.5)
    return np.clip(q, -127, 127).astype(np.int8)


def quantize_bias(b: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """int32 bias ``round(b / (s_in * s_w[c]))`` (zero point 0)."""
    s = np.float64(input_scale) * weight_scales.astype(np.float64)
    q = np.sign(b) * np.floor(np.abs(b.astype(np.float64) / s) + 0.5)
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)


def output_multipliers(input_scale: float, weight_scales: np.ndarray,
                       output_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) int32 arrays for ``s_in * s_w[c] / s_out``, computed in
    double from float32 scales as TFLite's PopulateConvolutionQuantizationParams does."""
    mults, shifts = [], []
    for ws in weight_scales.astype(np.float32).tolist():
        real = float(np.float32(input_scale)) * float(np.float32(ws)) / float(
            np.float32(output_scale))
        m, s = quantize_multiplier(real)
        mults.append(m)
        shifts.append(s)
    return np.array(mults, dtype=np.int32), np.array(shifts, dtype=np.int32)


def activation_range(activation: str | None, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp of a fused activation (TFLite CalculateActivationRangeQuantized)."""
    lo, hi = INT8_MIN, INT8_MAX
    if activation in ("relu", "relu6"):
        lo = max(lo, zero_point + tflite_round(0.0 / scale))
    if activation == "relu6":
        hi = min(hi, zero_point + tflite_round(6.0 / scale))
    return lo, hi


def add_params(s1: float, s2: float, s_out: float) -> dict[str, int]:
    """Multipliers and shifts of TFLite's int8 ADD (add.cc PrepareGeneralSubOp/Add)."""
    s1, s2, s_out = (float(np.float32(v)) for v in (s1, s2, s_out))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))
    return {"a_mult": m1, "a_shift": sh1, "b_mult": m2, "b_shift": sh2,
            "out_mult": mo, "out_shift": sho}
