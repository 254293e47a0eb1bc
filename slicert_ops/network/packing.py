"""The block forms' constant arrays, packed at build time (pure numpy: no TVM).

The weights are constants, so they are stored in the order the inner loop of a register-blocked
kernel reads them (conv2d ``(K/u, KH, KW, C, u)``, depthwise ``(K/u, KH, KW, u)``, dense
``(U/u, IN, u)``; the simd form ``(K/u, G, u, 4)`` and ``(U/u, G, u, 4)``: each output's
reduction as G 4-byte groups, the flat patch's tail zero), and (int8 layers) the input zero
point is folded into the bias.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Per-channel constants of an int8 blocked kernel (``qparams`` rows): folded bias,
#: multiplier, left shift, right shift, rounding mask (2^right - 1).
QPARAMS = 5


SIMD = 4      # network.tasks.FORM_SIMD (this module imports no TVM-side code)
LANES = 4
#: The simd form pads each tap's channels to whole 4-byte groups when that adds at most a
#: third more MACs (3 -> 4, 6 -> 8, 9 -> 12 channels): the patch then keeps its (KH, KW, C)
#: loops and is copied a word at a time; with fewer channels (1, 2, 5) the taps are one flat
#: patch padded at its end only.
MAX_TAP_PADDING = (4, 3)   # C4 / C at most 4/3


def tap_channels(c: int) -> int | None:
    """Channels per tap of the simd form's (KH, KW, C4) patch, or None for a flat patch."""
    c4 = -(-c // LANES) * LANES
    num, den = MAX_TAP_PADDING
    return c4 if c4 * den <= num * c else None


def _groups(task_type: str, sig: dict[str, Any]) -> int:
    if task_type == "dense":
        return -(-int(sig["in_shapes"][0][1]) // LANES)
    kh, kw = sig["kernel"]
    c = int(sig["in_shapes"][0][3])
    return -(-kh * kw * (tap_channels(c) or c) // LANES)


def packed_weight_shape(task_type: str, sig: dict[str, Any], unroll: int,
                        form: int | None = None) -> tuple[int, ...]:
    out = sig["out_shape"]
    ins = sig["in_shapes"][0]
    if form == SIMD:
        blocks = out[3] // unroll if task_type == "conv2d" else -(-out[1] // unroll)
        return (blocks, _groups(task_type, sig), unroll, LANES)
    if task_type == "conv2d":
        kh, kw = sig["kernel"]
        return (out[3] // unroll, kh, kw, ins[3], unroll)
    if task_type == "depthwise_conv2d":
        kh, kw = sig["kernel"]
        return (out[3] // unroll, kh, kw, unroll)
    return (-(-out[1] // unroll), ins[1], unroll)  # units padded to whole blocks


def pack_arrays(task_type: str, arrays: dict[str, np.ndarray], scalars: dict[str, Any],
                unroll: int, quantised: bool, form: int | None = None) -> dict[str, np.ndarray]:
    """An op's constant arrays in the block form's layout: packed weights and (int8) the bias
    with the input zero point folded in. Pure numpy, at build time."""
    w = np.asarray(arrays["weight"])
    if form == SIMD:                   # (L, K) -> (K/u, G, u, 4), L padded to 4G with zeros
        if task_type == "conv2d":
            kh, kw, c, k = w.shape
            c4 = tap_channels(c) or c   # each tap's channels padded with zero weights
            flat = np.pad(w, ((0, 0), (0, 0), (0, c4 - c), (0, 0))).reshape(kh * kw * c4, k)
        else:
            flat = w.T                 # (U, IN) -> (IN, U)
            k = flat.shape[1]
        wsum = flat.astype(np.int64).sum(axis=0)
        n_red = flat.shape[0]
        groups, blocks = -(-n_red // LANES), -(-k // unroll)
        flat = np.pad(flat, ((0, groups * LANES - n_red), (0, blocks * unroll - k)))
        wp = flat.reshape(groups, LANES, blocks, unroll).transpose(2, 0, 3, 1)
    elif task_type == "conv2d":          # (KH, KW, C, K) -> (K/u, KH, KW, C, u)
        kh, kw, c, k = w.shape
        wp = w.reshape(kh, kw, c, k // unroll, unroll).transpose(3, 0, 1, 2, 4)
        wsum = w.astype(np.int64).sum(axis=(0, 1, 2))
    elif task_type == "depthwise_conv2d":   # (KH, KW, K) -> (K/u, KH, KW, u)
        kh, kw, k = w.shape
        wp = w.reshape(kh, kw, k // unroll, unroll).transpose(2, 0, 1, 3)
        wsum = w.astype(np.int64).sum(axis=(0, 1))
    else:                              # (U, IN) -> (ceil(U/u), IN, u), zero units padding
        u, n_in = w.shape
        wsum = w.astype(np.int64).sum(axis=1)
        blocks = -(-u // unroll)
        w = np.concatenate([w, np.zeros((blocks * unroll - u, n_in), w.dtype)])
        wp = w.reshape(blocks, unroll, n_in).transpose(0, 2, 1)
    out = dict(arrays)
    out["weight"] = np.ascontiguousarray(wp)
    if quantised:
        folded = np.asarray(arrays["bias"]).astype(np.int64) - int(scalars["in_zp"]) * wsum
        if folded.min() < -(2**31) or folded.max() >= 2**31:
            raise ValueError("folded bias overflows int32")
        mult = np.asarray(arrays["mult"]).astype(np.int64)
        shift = np.asarray(arrays["shift"]).astype(np.int64)
        if (mult == -(2**31)).any():   # slicert_nn_requantize_lr assumes it (network.h)
            raise ValueError("a requantisation multiplier of INT32_MIN saturates")
        for name in ("bias", "mult", "shift"):
            del out[name]
        out["qparams"] = np.ascontiguousarray(np.stack(
            [folded, mult, np.maximum(shift, 0), np.maximum(-shift, 0),
             (1 << np.maximum(-shift, 0)) - 1], axis=1
        ).astype(np.int32))
    return out
