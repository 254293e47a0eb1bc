"""Operator definitions in ``tvm.te`` (compute only; the schedule lives in ``schedule.py``).

Buffers are named ``data``, ``weight`` and ``out``: these become the C parameter names.
The compute block is named ``out`` (see :data:`BLOCK`).
"""

from __future__ import annotations

from tvm import te, tirx

from .spec import OperatorSpec

BLOCK = "out"


def conv2d_nhwc_hwio(op: OperatorSpec) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """conv2d NHWC x HWIO -> NHWC. Padding is done inline with ``te.if_then_else`` (no padded
    temporary buffer); int8 products accumulate in int32."""
    n, h, w, c = op.input
    kh, kw = op.kernel
    k = int(op.out_channels)
    s, p = int(op.stride), int(op.padding)
    acc = op.output_dtype
    _, oh, ow, _ = op.output_shape
    data = te.placeholder((n, h, w, c), op.dtype, name="data")
    weight = te.placeholder((kh, kw, c, k), op.dtype, name="weight")
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    rc = te.reduce_axis((0, c), name="rc")

    def compute(b, y, x, f):
        iy = y * s + rh - p
        ix = x * s + rw - p
        if p > 0:
            inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
            v = te.if_then_else(inside, data[b, iy, ix, rc], tirx.const(0, op.dtype))
        else:
            v = data[b, iy, ix, rc]
        return te.sum(v.astype(acc) * weight[rh, rw, rc, f].astype(acc), axis=[rh, rw, rc])

    out = te.compute((n, oh, ow, k), compute, name=BLOCK)
    return data, weight, out


def dense(op: OperatorSpec) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """dense: (N, IN) x (IN, OUT) -> (N, OUT); int8 products accumulate in int32."""
    n, n_in = op.input
    units = int(op.units)
    acc = op.output_dtype
    data = te.placeholder((n, n_in), op.dtype, name="data")
    weight = te.placeholder((n_in, units), op.dtype, name="weight")
    r = te.reduce_axis((0, n_in), name="r")
    out = te.compute(
        (n, units),
        lambda b, u: te.sum(data[b, r].astype(acc) * weight[r, u].astype(acc), axis=[r]),
        name=BLOCK,
    )
    return data, weight, out


def define(op: OperatorSpec) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(data, weight, out)`` of the operator."""
    if op.type == "conv2d":
        tensors = conv2d_nhwc_hwio(op)
    elif op.type == "dense":
        tensors = dense(op)
    else:
        raise ValueError(f"unknown operator type {op.type!r}")
    return te.create_prim_func(list(tensors))
