"""The TensorIntrin ``slicert_dot4_s8`` (``network/simd.py``): a 4-element int8 dot product
and its implementation, a ``call_extern`` of ``slicert_nn_dot4``.

Its own module, imported by the simd schedule when it tensorizes: TVMScript's
``T.prim_func`` walks the whole Python stack with source context when it parses (0.2-0.7 s
per process), a cost every kernel generator import paid before, simd form or not.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .simd import DOT4, INTRIN


@T.prim_func(s_tir=True)
def _desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (4,), "int8", offset_factor=1)
    C = T.match_buffer(c, (1,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0], A[0:4], B[0:4])
        T.writes(C[0])
        for i in range(4):
            with T.sblock("update"):
                vi = T.axis.remap("R", [i])
                C[0] = C[0] + T.Cast("int32", A[vi]) * T.Cast("int32", B[vi])


@T.prim_func(s_tir=True)
def _impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (4,), "int8", offset_factor=1)
    C = T.match_buffer(c, (1,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0], A[0:4], B[0:4])
        T.writes(C[0])
        C[0] = T.call_extern("int32", DOT4, C[0], A.access_ptr("r"), B.access_ptr("r"))


TensorIntrin.register(INTRIN, _desc, _impl, override=True)
