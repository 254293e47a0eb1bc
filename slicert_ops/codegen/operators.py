"""The unscheduled PrimFunc of a single operator, from the one kernel generator
(``network/kernels.py``): the direct form, ``(data, weight, out)``. meta_schedule tunes it.

Buffers are named ``data``, ``weight`` and ``out``: these become the C parameter names. The
compute block is named ``out`` (see :data:`BLOCK`): the reduction writes the output (int32
accumulators for int8 inputs, float32 for float32).
"""

from __future__ import annotations

from tvm import tirx

from slicert_ops.network.kernels import define_func

from .spec import OperatorSpec, operator_task

BLOCK = "out"


def define(op: OperatorSpec) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(data, weight, out)`` of the operator."""
    if op.type not in ("conv2d", "dense"):
        raise ValueError(f"unknown operator type {op.type!r}")
    return define_func(operator_task(op))
