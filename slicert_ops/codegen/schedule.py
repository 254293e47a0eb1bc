"""Hierarchical tiling with ``tvm.s_tir.Schedule``.

conv2d (loops after scheduling, outer to inner)::

    n, y_mac, x_mac,            macro-tiles: tile_size x tile_size output pixels (locality)
      y_mic, x_mic,             micro-tiles: micro_tile x micro_tile pixels x all channels
        y_in, x_in, k_out,      one output pixel, a group of `unroll` output channels
          init acc[unroll]      (unrolled)
          rh, rw, rc, k_in      reduction; k_in (= unroll channels) innermost, unrolled:
                                one input load feeds `unroll` accumulators
          out <- acc[unroll]    (unrolled)
        slicert_yield_check()   appended to the body of x_mic: once per micro-tile

dense::

    n, u_mac, u_mic,            macro-tile: tile_size units; micro-tile: micro_tile units
      u_in: acc = 0; for r_out: for r_in (unroll, unrolled): acc += ...; out <- acc
      slicert_yield_check()     appended to the body of u_mic

The accumulators are a small cache (``cache_write``, scope :data:`ACC_SCOPE`) initialised
before the reduction (``decompose_reduction``): ``unroll`` (conv2d) or 1 (dense) scalars that
the C compiler keeps in registers. The micro-tile loop carries the annotation
:data:`YIELD_ANNOTATION`; the lowering pipeline (``lower_c.py``) appends the extern call
there and removes the annotation. The schedule trace (``sch.trace``) records all of it.
"""

from __future__ import annotations

from tvm import s_tir, tirx

from .operators import BLOCK
from .spec import OperatorSpec, ScheduleParams

YIELD_ANNOTATION = "slicert.yield_check"
# Scope of the accumulator cache. In this TVM generation LowerTVMBuiltin turns a small (< 1 KiB)
# "global" allocation into a C stack array, but any "local" one into TVMBackendAllocWorkspace.
ACC_SCOPE = "global"


def _unroll_last_loop(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    sch.unroll(sch.get_loops(block)[-1])


def schedule_conv2d(sch: s_tir.Schedule, sched: ScheduleParams) -> None:
    blk = sch.get_sblock(BLOCK)
    n, y, x, k, rh, rw, rc = sch.get_loops(blk)
    y_mac, y_t = sch.split(y, [None, sched.tile_size])
    x_mac, x_t = sch.split(x, [None, sched.tile_size])
    y_mic, y_in = sch.split(y_t, [None, sched.micro_tile])
    x_mic, x_in = sch.split(x_t, [None, sched.micro_tile])
    k_out, k_in = sch.split(k, [None, sched.unroll])
    sch.reorder(n, y_mac, x_mac, y_mic, x_mic, y_in, x_in, k_out, rh, rw, rc, k_in)
    acc = sch.cache_write(blk, 0, ACC_SCOPE)
    sch.reverse_compute_at(acc, k_out)
    init = sch.decompose_reduction(blk, rh)
    if sched.unroll > 1:  # a unit loop marked unrolled would unroll its parent (k_out)
        sch.unroll(k_in)
        _unroll_last_loop(sch, init)
        _unroll_last_loop(sch, acc)
    sch.annotate(x_mic, YIELD_ANNOTATION, 1)


def schedule_dense(sch: s_tir.Schedule, sched: ScheduleParams) -> None:
    blk = sch.get_sblock(BLOCK)
    n, u, r = sch.get_loops(blk)
    u_mac, u_t = sch.split(u, [None, sched.tile_size])
    u_mic, u_in = sch.split(u_t, [None, sched.micro_tile])
    r_out, r_in = sch.split(r, [None, sched.unroll])
    sch.reorder(n, u_mac, u_mic, u_in, r_out, r_in)
    acc = sch.cache_write(blk, 0, ACC_SCOPE)
    sch.reverse_compute_at(acc, u_in)
    sch.decompose_reduction(blk, r_out)
    if sched.unroll > 1:
        sch.unroll(r_in)
    sch.annotate(u_mic, YIELD_ANNOTATION, 1)


def apply_schedule(func: tirx.PrimFunc, op: OperatorSpec,
                   sched: ScheduleParams) -> s_tir.Schedule:
    """Schedule ``func`` (from ``operators.define``); ``sched`` must be resolved and valid."""
    sch = s_tir.Schedule(func, debug_mask="all")
    if op.type == "conv2d":
        schedule_conv2d(sch, sched)
    else:
        schedule_dense(sch, sched)
    return sch
