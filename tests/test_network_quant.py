"""int8 quantisation arithmetic against a literal transcription of TFLite's C++ (pure Python)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slicert_ops.network import quant

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


# ---- TFLite / gemmlowp, transcribed line by line with Python ints and C int32 semantics ----
def c_div(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def wrap32(x: int) -> int:
    return ((x + 2**31) % 2**32) - 2**31


def tfl_srdhm(a: int, b: int) -> int:
    overflow = a == b and a == I32_MIN
    a_64, b_64 = a, b
    ab_64 = a_64 * b_64
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = c_div(ab_64 + nudge, 1 << 31)
    return I32_MAX if overflow else ab_x2_high32


def tfl_rdbypot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    zero, one = 0, 1
    remainder = x & mask
    threshold = (mask >> 1) + (one if x < zero else zero)
    return (x >> exponent) + (one if remainder > threshold else zero)


def tfl_mbqm(x: int, m: int, shift: int) -> int:
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    return tfl_rdbypot(tfl_srdhm(wrap32(x * (1 << left_shift)), m), right_shift)


def tfl_quantize_multiplier(d: float) -> tuple[int, int]:
    if d == 0.0:
        return 0, 0
    q, shift = math.frexp(d)
    q_fixed = int(math.copysign(math.floor(abs(q * (1 << 31)) + 0.5), q))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("real, expected", [
    (0.0, (0, 0)), (0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.25, (1 << 30, -1)),
    (0.75, (3 << 29, 0)), (2.0**-40, (0, 0)), (2.0**40, ((1 << 31) - 1, 30)),
])
def test_quantize_multiplier_known_values(real, expected):
    assert quant.quantize_multiplier(real) == expected


def test_quantize_multiplier_matches_transcription_and_is_accurate():
    rng = np.random.default_rng(1)
    for real in np.concatenate([10 ** rng.uniform(-9, 3, 500), [1 - 2**-33, 0.5 - 2**-40]]):
        m, s = quant.quantize_multiplier(float(real))
        assert (m, s) == tfl_quantize_multiplier(float(real))
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) / real - 1) < 2**-30


def test_rounding_is_half_away_from_zero():
    assert [quant.tflite_round(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5, 0.49999)] == \
        [1, 2, 3, -1, -2, 0]


def test_requantisation_is_bit_exact_against_the_transcription():
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.integers(-2**31, 2**31, 4000), rng.integers(-5000, 5000, 4000),
                         [I32_MIN, I32_MAX, 0, -1, 1]])
    for m, s in [quant.quantize_multiplier(float(r)) for r in 10 ** rng.uniform(-6, 0.5, 40)
                 ] + [(1 << 30, 0), (I32_MAX, -31), (1 << 30, 5)]:
        got = quant.multiply_by_quantized_multiplier(xs, m, s)
        want = [tfl_mbqm(int(x), m, s) for x in xs]
        assert got.tolist() == want, (m, s)


def test_srdhm_saturates_like_gemmlowp():
    assert int(quant.saturating_rounding_doubling_high_mul(I32_MIN, I32_MIN)) == I32_MAX
    assert tfl_srdhm(I32_MIN, I32_MIN) == I32_MAX


def test_c_shift_form_equals_tflite_truncating_form():
    """network.h computes (a*b + 2^30) >> 31; TFLite truncates (a*b + nudge) / 2^31."""
    rng = np.random.default_rng(3)
    a = rng.integers(-2**31, 2**31, 20000)
    b = rng.integers(0, 2**31, 20000)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        assert (x * y + (1 << 30)) >> 31 == tfl_srdhm(x, y)
    for ab in range(-(3 << 30), 3 << 30, (1 << 28) + 12345):
        assert (ab + (1 << 30)) >> 31 == c_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)),
                                                1 << 31)


def test_activation_params_cover_zero_and_the_range():
    for lo, hi in [(-1.0, 1.0), (0.0, 6.0), (-3.0, -1.0), (2.0, 5.0)]:
        scale, zp = quant.choose_activation_params(lo, hi)
        assert -128 <= zp <= 127 and scale > 0
        assert abs(scale * (-128 - zp) - min(lo, 0.0)) <= scale
        assert abs(scale * (127 - zp) - max(hi, 0.0)) <= scale
    assert quant.choose_activation_params(0.0, 6.0)[1] == -128
    scale, zp = quant.choose_activation_params(0.0, 0.0)  # a constant-zero tensor
    assert scale > 0 and zp == -128


def test_activation_range_relu_relu6():
    scale, zp = 6.0 / 255, -128
    assert quant.activation_range(None, scale, zp) == (-128, 127)
    assert quant.activation_range("relu", scale, zp) == (-128, 127)
    assert quant.activation_range("relu", 0.01, -10) == (-10, 127)
    assert quant.activation_range("relu6", 0.1, -10) == (-10, 50)


def test_weight_and_bias_quantisation():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    s = quant.per_channel_weight_scales(w)
    q = quant.quantize_weights(w, s)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.all(np.abs(q.astype(np.float64) * s - w) <= s / 2 + 1e-7)
    b = quant.quantize_bias(np.array([0.5, -0.25, 0, 1, 2], np.float32), 0.01, s)
    assert b.dtype == np.int32
    assert b[0] == round(0.5 / (0.01 * float(s[0])))


def test_add_params_follow_tflite_prepare():
    p = quant.add_params(0.02, 0.01, 0.03)
    assert (p["a_mult"], p["a_shift"]) == quant.quantize_multiplier(0.5)
    assert (p["b_mult"], p["b_shift"]) == quant.quantize_multiplier(
        float(np.float32(0.01)) / (2 * float(np.float32(0.02))))
    assert p["out_shift"] <= 0
