"""TVM kernels of the network layers: te definitions, s_tir schedules, plain-C lowering.

Reuses the project's lowering (``slicert_ops.codegen.lower_c``: the registered
``slicert_unpacked_c`` pipeline, the yield-check pass, typed pointer parameters, and the C
post-processing that drops TVM's preamble). Each kernel is ``void <entry>(...)`` with buffers
as typed pointers and the quantisation values as scalar ``int32_t`` arguments, e.g. int8
conv2d::

    void e(int8_t* data, int8_t* weight, int32_t* bias, int32_t* mult, int32_t* shift,
           int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t* out);

Requantisation calls ``slicert_nn_requantize(x, mult, shift)`` (a ``call_extern``), the static
inline C twin of TFLite's MultiplyByQuantizedMultiplier in ``zephyr/include/slicert/network.h``.

Schedules (the yield check is appended to the loop marked :data:`YIELD_ANNOTATION`):

- conv2d / depthwise: output rows and columns split into macro-tiles (``tile_size``) and
  micro-tiles (``micro_tile``); channels split into ``channel_tile`` groups (outside the
  micro-tile's pixels) and those by ``unroll``; the int32 accumulators of one pixel x
  ``unroll`` channels are computed at the channel-group loop (a stack array, unrolled), then
  requantised. Yield after every micro-tile (``micro_tile``^2 pixels x ``channel_tile``
  channels).
- dense: units split by ``tile_size`` then ``micro_tile``; reduction split by ``unroll``
  (inner part unrolled); yield after every micro-tile of units.
- avg/max pool: yield after every ``micro_tile`` output rows x ``channel_tile`` channels.
- add / clamp: the tensor as a flat array, yield after every ``micro_tile`` elements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import s_tir, te, tirx

from slicert_ops.codegen import lowering
from slicert_ops.codegen.lowering import YIELD_ANNOTATION

from . import blocked, packing, simd
from .features import LAYER_FEATURES_VERSION, layer_features
from .tasks import (
    BLOCKED_TYPES,
    LayerSchedule,
    Task,
    accumulator_output,
    micro_tiles,
    resolve,
)

REQUANT = "slicert_nn_requantize"
REQUANT_LR = "slicert_nn_requantize_lr"  # the blocked forms' (shift split at build time)
NN_HEADER = "slicert/network.h"
ADD_LEFT_SHIFT = 20
VERIFY_SREF_TREE = 1  # s_tir ScheduleDebugMask kVerifySRefTree
CTYPE = {"int8": "int8_t", "int32": "int32_t", "float32": "float"}
POOL_TYPES = ("avg_pool", "max_pool")


@dataclass(frozen=True)
class LayerKernel:
    """Generated C of one task."""

    entry: str
    c_source: str
    params: tuple[tuple[str, str], ...]   # (name, C type) in call order; pointers end in '*'
    micro_tiles: int
    schedule: LayerSchedule
    tvm_config: dict[str, Any] = field(default_factory=dict)

    @property
    def prototype(self) -> str:
        ps = ", ".join(f"{c} {n}" for n, c in self.params)
        return f"void {self.entry}({ps});"

    def pack(self, task_type: str, arrays: dict[str, Any], scalars: dict[str, Any]
             ) -> dict[str, Any]:
        """An op's constant arrays in the layout this kernel reads (the block form packs the
        weights and folds the input zero point into the bias; other forms read them as
        they are)."""
        if not self.schedule.blocked:
            return arrays
        return packing.pack_arrays(task_type, arrays, scalars, int(self.schedule.unroll),
                                   quantised="in_zp" in scalars, form=self.schedule.form)


# ------------------------------------------------------------------------------------------
# te definitions
# ------------------------------------------------------------------------------------------
def _i32(v: int) -> tirx.PrimExpr:
    return tirx.const(v, "int32")


def _requant(x, m, s):
    return tirx.call_extern("int32", REQUANT, x, m, s)


def _clamp_i8(v, lo, hi):
    return tirx.min(tirx.max(v, lo), hi).astype("int8")


def _define(task: Task) -> tuple[list[Any], str]:
    """(te args in call order, name of the output compute block)."""
    sig, dt = task.signature, task.dtype
    t = task.type
    q = dt == "int8"
    acc_only = accumulator_output(sig)
    zp = q and not acc_only   # subtract the input zero point per MAC
    acc_t = "int32" if q else "float32"
    out_shape = tuple(sig["out_shape"])
    ish = [tuple(s) for s in sig["in_shapes"]]
    if t in ("conv2d", "depthwise_conv2d"):
        n, h, w, c = ish[0]
        kh, kw = sig["kernel"]
        sh, sw = sig["stride"]
        pt, _pb, pl, _pr = sig["padding"]
        k = out_shape[3]
        mult_d = sig.get("depth_multiplier", 1)
        data = te.placeholder(ish[0], dt, name="data")
        wshape = (kh, kw, c, k) if t == "conv2d" else (kh, kw, k)
        weight = te.placeholder(wshape, dt, name="weight")
        bias = te.placeholder((k,), acc_t, name="bias")
        rh = te.reduce_axis((0, kh), name="rh")
        rw = te.reduce_axis((0, kw), name="rw")
        rc = te.reduce_axis((0, c), name="rc") if t == "conv2d" else None
        in_zp = te.var("in_zp", "int32")

        def pix(b, iy, ix, ch):
            v = data[b, iy, ix, ch].astype(acc_t)
            if zp:
                v = v - in_zp
            if pt or pl or _pb or _pr:
                inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
                v = te.if_then_else(inside, v, tirx.const(0, acc_t))
            return v

        if t == "conv2d":
            def acc_f(b, y, x, f):
                iy, ix = y * sh + rh - pt, x * sw + rw - pl
                return te.sum(pix(b, iy, ix, rc) * weight[rh, rw, rc, f].astype(acc_t),
                              axis=[rh, rw, rc])
        else:
            def acc_f(b, y, x, f):
                iy, ix = y * sh + rh - pt, x * sw + rw - pl
                ch = f // mult_d if mult_d > 1 else f
                return te.sum(pix(b, iy, ix, ch) * weight[rh, rw, f].astype(acc_t),
                              axis=[rh, rw])
        if acc_only:
            return [data, weight, te.compute(out_shape, acc_f, name="out")], "out"
        acc = te.compute(out_shape, acc_f, name="acc")
        return _finish_mac(q, [data, weight, bias], acc, in_zp, out_shape, dt,
                           lambda b, y, x, f: acc[b, y, x, f] + bias[f], 3)
    if t == "dense":
        n, n_in = ish[0]
        units = out_shape[1]
        data = te.placeholder(ish[0], dt, name="data")
        weight = te.placeholder((n_in, units) if acc_only else (units, n_in), dt,
                                name="weight")
        bias = te.placeholder((units,), acc_t, name="bias")
        r = te.reduce_axis((0, n_in), name="r")
        in_zp = te.var("in_zp", "int32")

        def acc_f(b, u):
            v = data[b, r].astype(acc_t)
            if zp:
                v = v - in_zp
            w = weight[r, u] if acc_only else weight[u, r]
            return te.sum(v * w.astype(acc_t), axis=[r])
        if acc_only:
            return [data, weight, te.compute(out_shape, acc_f, name="out")], "out"
        acc = te.compute(out_shape, acc_f, name="acc")
        return _finish_mac(q, [data, weight, bias], acc, in_zp, out_shape, dt,
                           lambda b, u: acc[b, u] + bias[u], 1)
    if t in ("avg_pool", "max_pool"):
        n, h, w, c = ish[0]
        kh, kw = sig["kernel"]
        sh, sw = sig["stride"]
        pt, pb, pl, pr = sig["padding"]
        data = te.placeholder(ish[0], dt, name="data")
        rh = te.reduce_axis((0, kh), name="rh")
        rw = te.reduce_axis((0, kw), name="rw")
        padded = bool(pt or pb or pl or pr)

        def val(b, iy, ix, ch, fill):
            v = data[b, iy, ix, ch].astype(acc_t)
            if padded:
                inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
                v = te.if_then_else(inside, v, fill)
            return v

        if t == "max_pool":
            fill = _i32(-128) if q else tirx.const(-3.4028234663852886e38, "float32")
            acc = te.compute(out_shape, lambda b, y, x, ch: te.max(
                val(b, y * sh + rh - pt, x * sw + rw - pl, ch, fill), axis=[rh, rw]),
                name="acc")
        else:
            acc = te.compute(out_shape, lambda b, y, x, ch: te.sum(
                val(b, y * sh + rh - pt, x * sw + rw - pl, ch, tirx.const(0, acc_t)),
                axis=[rh, rw]), name="acc")

        def count(y, x):
            if not padded:
                return _i32(kh * kw)
            y0, x0 = y * sh - pt, x * sw - pl
            cy = tirx.min(_i32(kh), _i32(h) - y0) - tirx.max(_i32(0), -y0)
            cx = tirx.min(_i32(kw), _i32(w) - x0) - tirx.max(_i32(0), -x0)
            return cy * cx

        if q:
            lo, hi = te.var("act_min", "int32"), te.var("act_max", "int32")
            if t == "max_pool":
                out = te.compute(out_shape, lambda b, y, x, ch: _clamp_i8(
                    acc[b, y, x, ch], lo, hi), name="out")
            else:
                def avg(b, y, x, ch):
                    s, cnt = acc[b, y, x, ch], count(y, x)
                    half = tirx.truncdiv(cnt, 2)
                    num = tirx.Select(s > 0, s + half, s - half)
                    return _clamp_i8(tirx.truncdiv(num, cnt), lo, hi)
                out = te.compute(out_shape, avg, name="out")
            return [data, lo, hi, out], "out"
        if t == "max_pool":
            out = te.compute(out_shape, lambda b, y, x, ch: acc[b, y, x, ch] + tirx.const(
                0.0, "float32"), name="out")
        else:
            out = te.compute(out_shape, lambda b, y, x, ch: acc[b, y, x, ch] / count(
                y, x).astype("float32"), name="out")
        return [data, out], "out"
    if t in ("add", "clamp"):
        size = 1
        for d in out_shape:
            size *= d
        flat = (size,)
        a = te.placeholder(flat, dt, name="a" if t == "add" else "data")
        if q:
            lo, hi = te.var("act_min", "int32"), te.var("act_max", "int32")
        else:
            lo, hi = te.var("act_min", "float32"), te.var("act_max", "float32")
        if t == "clamp":
            if q:
                out = te.compute(flat, lambda i: _clamp_i8(a[i].astype("int32"), lo, hi),
                                 name="out")
            else:
                out = te.compute(flat, lambda i: tirx.min(tirx.max(a[i], lo), hi), name="out")
            return [a, lo, hi, out], "out"
        b = te.placeholder(flat, dt, name="b")
        if not q:
            out = te.compute(flat, lambda i: tirx.min(tirx.max(a[i] + b[i], lo), hi),
                             name="out")
            return [a, b, lo, hi, out], "out"
        names = ("a_zp", "b_zp", "out_zp", "a_mult", "a_shift", "b_mult", "b_shift",
                 "out_mult", "out_shift")
        v = {nm: te.var(nm, "int32") for nm in names}

        def add_f(i):
            sa = (a[i].astype("int32") - v["a_zp"]) * _i32(1 << ADD_LEFT_SHIFT)
            sb = (b[i].astype("int32") - v["b_zp"]) * _i32(1 << ADD_LEFT_SHIFT)
            raw = _requant(sa, v["a_mult"], v["a_shift"]) + _requant(sb, v["b_mult"],
                                                                    v["b_shift"])
            return _clamp_i8(_requant(raw, v["out_mult"], v["out_shift"]) + v["out_zp"],
                             lo, hi)
        out = te.compute(flat, add_f, name="out")
        return [a, b, *(v[nm] for nm in names), lo, hi, out], "out"
    raise ValueError(f"no kernel for op type {t!r}")


def _define_blocked(task: Task, s: LayerSchedule) -> tuple[list[Any], str]:
    """The block form's te (``network/blocked.py``): the same kernel arguments as the direct
    form, with ``weight`` packed and ``bias`` folded by :meth:`LayerKernel.pack`."""
    q = task.dtype == "int8"
    acc_t = "int32" if q else "float32"
    out_shape = blocked.kernel_out_shape(task.type, task.signature, s)
    chan_axis = len(out_shape) - 1
    if accumulator_output(task.signature):   # the accumulators of the output's extent
        data, weight, acc = blocked.define_accumulate(task.type, task.signature, task.dtype,
                                                      s, acc_t, None)
        return [data, weight, te.compute(out_shape, lambda *idx: acc[idx], name="out")], "out"
    in_zp = te.var("in_zp", "int32")
    data, weight, acc = blocked.define_accumulate(task.type, task.signature, task.dtype, s,
                                                  acc_t, in_zp if q else None)
    if not q:
        bias = te.placeholder((out_shape[chan_axis],), acc_t, name="bias")
        return _finish_mac(q, [data, weight, bias], acc, in_zp, out_shape, task.dtype,
                           lambda *idx: acc[idx] + bias[idx[chan_axis]], chan_axis)
    # one row of constants per channel (packing.pack_arrays): folded bias, multiplier, left
    # and right shift, rounding mask: one pointer, and the requantisation needs no branch on
    # the shift sign
    qp = te.placeholder((out_shape[chan_axis], packing.QPARAMS), "int32", name="qparams")
    out_zp = te.var("out_zp", "int32")
    lo, hi = te.var("act_min", "int32"), te.var("act_max", "int32")

    def out_f(*idx):
        ch = idx[chan_axis]
        v = tirx.call_extern("int32", REQUANT_LR, acc[idx] + qp[ch, 0], qp[ch, 1], qp[ch, 2],
                             qp[ch, 3], qp[ch, 4])
        return _clamp_i8(v + out_zp, lo, hi)
    out = te.compute(out_shape, out_f, name="out")
    return [data, weight, qp, in_zp, out_zp, lo, hi, out], "out"


def _finish_mac(q: bool, tensors: list[Any], acc: Any, in_zp: Any, out_shape, dt: str,
                with_bias, chan_axis: int) -> tuple[list[Any], str]:
    if q:
        mult = te.placeholder((out_shape[chan_axis],), "int32", name="mult")
        shift = te.placeholder((out_shape[chan_axis],), "int32", name="shift")
        out_zp = te.var("out_zp", "int32")
        lo, hi = te.var("act_min", "int32"), te.var("act_max", "int32")

        def out_f(*idx):
            ch = idx[chan_axis]
            v = _requant(with_bias(*idx), mult[ch], shift[ch]) + out_zp
            return _clamp_i8(v, lo, hi)
        out = te.compute(out_shape, out_f, name="out")
        return [*tensors, mult, shift, in_zp, out_zp, lo, hi, out], "out"
    lo, hi = te.var("act_min", "float32"), te.var("act_max", "float32")
    out = te.compute(out_shape, lambda *idx: tirx.min(tirx.max(with_bias(*idx), lo), hi),
                     name="out")
    return [*tensors, lo, hi, out], "out"


# ------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------
def _loops_below(sch: s_tir.Schedule, block: Any, loop: Any) -> list[Any]:
    loops = sch.get_loops(block)
    target = sch.get(loop)
    for i, lp in enumerate(loops):
        if sch.get(lp).same_as(target):
            return list(loops[i + 1:])
    raise RuntimeError("compute_at did not place the block under the loop")


def _schedule(sch: s_tir.Schedule, task: Task, s: LayerSchedule) -> None:
    t = task.type
    if accumulator_output(task.signature):   # the reduction is the output: a cache for it
        acc = sch.get_sblock("out")
        out = sch.cache_write(acc, 0, "global")
    else:
        out = sch.get_sblock("out")
        acc = sch.get_sblock("acc") if t in BLOCKED_TYPES + POOL_TYPES else None
    if t in ("conv2d", "depthwise_conv2d"):
        n, y, x, k = sch.get_loops(out)
        y_mac, y_t = sch.split(y, [None, s.tile_size])
        x_mac, x_t = sch.split(x, [None, s.tile_size])
        y_mic, y_in = sch.split(y_t, [None, s.micro_tile])
        x_mic, x_in = sch.split(x_t, [None, s.micro_tile])
        k_total = task.signature["out_shape"][3]
        if s.channel_tile < k_total:  # granule: micro-tile pixels x channel_tile channels
            k_mic, k_t = sch.split(k, [None, s.channel_tile])
            k_out, k_in = sch.split(k_t, [None, s.unroll])
            sch.reorder(n, y_mac, x_mac, y_mic, x_mic, k_mic, y_in, x_in, k_out, k_in)
            yield_loop = k_mic
        else:
            k_out, k_in = sch.split(k, [None, s.unroll])
            sch.reorder(n, y_mac, x_mac, y_mic, x_mic, y_in, x_in, k_out, k_in)
            yield_loop = x_mic
        sch.compute_at(acc, k_out)
        # compute_at makes the spatial loop (extent unroll; none when unroll is 1) then the
        # reduction loops of extent > 1 (a 1x1 kernel has fewer)
        sub = _loops_below(sch, acc, k_out)
        spatial = sub[0] if s.unroll > 1 else None
        red = sub[1:] if s.unroll > 1 else sub
        if spatial is not None and red:
            sch.reorder(*red, spatial)
        if red:
            init = sch.decompose_reduction(acc, red[0])
            if spatial is not None:
                sch.unroll(sch.get_loops(init)[-1])
        if spatial is not None:
            sch.unroll(spatial)
            sch.unroll(k_in)
        sch.annotate(yield_loop, YIELD_ANNOTATION, 1)
    elif t == "dense":
        n, u = sch.get_loops(out)
        u_mac, u_t = sch.split(u, [None, s.tile_size])
        u_mic, u_in = sch.split(u_t, [None, s.micro_tile])
        sch.compute_at(acc, u_in)
        sub = _loops_below(sch, acc, u_in)
        if sub:
            r_out, r_in = sch.split(sub[-1], [None, s.unroll])
            sch.decompose_reduction(acc, r_out)
            if s.unroll > 1:
                sch.unroll(r_in)
        sch.annotate(u_mic, YIELD_ANNOTATION, 1)
    elif t in ("avg_pool", "max_pool"):
        n, y, x, c = sch.get_loops(out)
        y_o, y_i = sch.split(y, [None, s.micro_tile])
        if s.channel_tile < task.signature["out_shape"][3]:
            c_o, c = sch.split(c, [None, s.channel_tile])
            sch.reorder(n, y_o, c_o, y_i, x, c)
            yield_loop = c_o
        else:
            yield_loop = y_o
        sch.compute_at(acc, c)
        sub = _loops_below(sch, acc, c)
        if sub:  # the init before the window loops (no "maybe uninitialized" accumulator)
            sch.decompose_reduction(acc, sub[0])
        sch.annotate(yield_loop, YIELD_ANNOTATION, 1)
    else:
        (i,) = sch.get_loops(out)
        i_o, _i_i = sch.split(i, [None, s.micro_tile])
        sch.annotate(i_o, YIELD_ANNOTATION, 1)


def _c_params(args: list[Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for a in args:
        if isinstance(a, te.Tensor):
            out.append((a.op.name, CTYPE[str(a.dtype)] + "*"))
        else:
            out.append((a.name, CTYPE[str(a.ty)]))
    return tuple(out)


LOCAL_ARRAY = re.compile(r"^(\s+(?:int32_t|int8_t|float) \w+\[\d+\]);$", re.M)


def define(task: Task, s: LayerSchedule) -> tuple[list[Any], str]:
    """(te args in call order, output block name) of a task in the form of the resolved
    schedule ``s``."""
    return _define_blocked(task, s) if s.blocked else _define(task)


def define_func(task: Task, s: LayerSchedule | None = None) -> tirx.PrimFunc:
    """The unscheduled PrimFunc of a task (default: the direct form), e.g. for meta_schedule."""
    s = resolve(task, s or LayerSchedule(form=0 if task.type in BLOCKED_TYPES else None))
    return te.create_prim_func(define(task, s)[0])


def schedule_task(task: Task, s: LayerSchedule) -> tuple[s_tir.Schedule, list[Any]]:
    """The s_tir schedule of a task under the resolved, valid schedule ``s`` and its te
    arguments (call order)."""
    args, _ = define(task, s)
    func = te.create_prim_func(args)
    # The block form's accumulation is guarded per register block, its epilogue per pixel:
    # the cached region-cover flag disagrees with that by design, the sref tree is verified.
    sch = s_tir.Schedule(func, debug_mask=VERIFY_SREF_TREE if s.blocked else "all")
    if s.blocked:
        blocked.schedule_blocked(sch, task.type, task.signature, s)
    else:
        _schedule(sch, task, s)
    return sch, args


def lower_to_c(sch: s_tir.Schedule, entry: str, head: str, nn_header: bool = True) -> str:
    """Plain C of a scheduled kernel (``codegen.lowering``), with exactly one yield check
    call site; ``nn_header``: include the requantisation helpers."""
    src = lowering.to_plain_c(lowering.build_c(sch.mod["main"], entry), head)
    # Accumulator arrays start zeroed: their init sits behind the same bounds guard as
    # their use, which gcc cannot always see (-Werror=maybe-uninitialized at unroll 8).
    src = LOCAL_ARRAY.sub(r"\1 = {0};", src)
    inc = f'#include "{lowering.YIELD_HEADER}"'
    if nn_header:
        inc += f'\n#include "{NN_HEADER}"'
        src = src.replace(f'#include "{lowering.YIELD_HEADER}"', inc, 1)
    src = simd.with_helper(src, inc)   # the simd form's MAC helper
    if not re.search(re.escape(f"void {entry}(") + r"[^)]*\) \{", src):
        raise RuntimeError(f"generated C does not define {entry}")
    calls = sum(1 for ln in src.splitlines() if ln.strip() == lowering.YIELD_FUNC + "();")
    if calls != 1:
        raise RuntimeError(f"{entry}: expected one yield check call site (in the micro-tile "
                           f"loop), found {calls}")
    return src


def generate_layer_kernel(task: Task, sched: LayerSchedule | None = None,
                          entry: str | None = None) -> LayerKernel:
    """Plain-C kernel of a task with a schedule (missing parameters: the defaults)."""
    from .tasks import check_schedule

    sched = sched or LayerSchedule()
    errs = check_schedule(task, sched)
    if errs:
        raise ValueError(f"impossible schedule for {task.type} task {task.key}: "
                         + "; ".join(errs))
    s = resolve(task, sched)
    entry = entry or task.entry
    sch, args = schedule_task(task, s)
    params = _c_params(args)
    head = (f"/* {entry}: {task.type} {task.dtype} task {task.key} (layers: "
            f"{', '.join(task.layer_names)}); schedule {s.to_dict()}; generated by "
            f"slicert_ops.network with TVM {tvm.__version__}; do not edit. */")
    src = lower_to_c(sch, entry, head)
    sig = ", ".join(f"{c} {n}" for n, c in params)
    return LayerKernel(entry=entry, c_source=src, params=params,
                       micro_tiles=micro_tiles(task, s), schedule=s,
                       tvm_config={"task": task.key, "signature": task.signature,
                                   "schedule": s.to_dict(), "prototype": f"void {entry}({sig});",
                                   "schedule_trace": "\n".join(sch.trace.as_python()),
                                   "tvm_version": tvm.__version__,
                                   "features_version": LAYER_FEATURES_VERSION,
                                   "features": layer_features(task, s)})
