"""Deterministic inputs and the numpy reference of an operator (host side).

int8: inputs in [-8, 7], reference exact in int32. float32: inputs in [-1, 1), reference
accumulated in float64 and rounded to float32 (compare with a tolerance: the kernel sums in
float32, in its own order).
"""

from __future__ import annotations

import numpy as np

from .spec import OperatorSpec

INT8_RANGE = (-8, 7)


def make_inputs(op: OperatorSpec, seed: int = 0) -> list[np.ndarray]:
    """``[data, weight]`` in the operator's layouts (C order), the same for the same seed."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in op.input_shapes:
        if op.dtype == "int8":
            lo, hi = INT8_RANGE
            arrays.append(rng.integers(lo, hi + 1, size=shape, dtype=np.int8))
        elif op.dtype == "float32":
            arrays.append(rng.uniform(-1.0, 1.0, size=shape).astype(np.float32))
        else:
            raise ValueError(f"dtype: {op.dtype!r} is not supported")
    return arrays


def reference(op: OperatorSpec, inputs: list[np.ndarray]) -> np.ndarray:
    """The expected output (int32 for int8 inputs, float32 for float32)."""
    data, weight = inputs
    if tuple(data.shape) != op.input_shapes[0] or tuple(weight.shape) != op.input_shapes[1]:
        raise ValueError(f"inputs have shapes {data.shape}, {weight.shape}; the operator "
                         f"expects {op.input_shapes[0]}, {op.input_shapes[1]}")
    acc = np.int64 if op.dtype == "int8" else np.float64
    d = data.astype(acc)
    w = weight.astype(acc)
    if op.type == "dense":
        out = d @ w
    elif op.type == "conv2d":
        n, h, wd, c = op.input
        kh, kw = op.kernel
        s, p = op.stride, op.padding
        _, oh, ow, k = op.output_shape
        padded = np.zeros((n, h + 2 * p, wd + 2 * p, c), dtype=acc)
        padded[:, p:p + h, p:p + wd, :] = d
        out = np.zeros((n, oh, ow, k), dtype=acc)
        for i in range(kh):
            for j in range(kw):
                patch = padded[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s, :]
                out += np.tensordot(patch, w[i, j], axes=([3], [0]))
    else:
        raise ValueError(f"type: {op.type!r} is not supported")
    return out.astype(np.int32 if op.dtype == "int8" else np.float32)
