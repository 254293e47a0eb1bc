"""Per-layer features of (task, schedule) for the cost model (pure Python, microseconds).

Flat ``{name: int | float}`` with the same keys for every op type (0 where a feature does not
apply), computed from the task's signature and the resolved schedule alone, so that a search
can rank schedules of layers it has never measured: the op type (one-hot), the shapes, the
work (MACs, window reads, requantisations), the tiling (granule size, number of yield checks,
unroll) and the bytes a granule touches.
"""

from __future__ import annotations

import math

from .tasks import (
    FORM_IM2COL,
    FORM_SIMD,
    LayerSchedule,
    Task,
    flat_pixels,
    micro_tiles,
    resolve,
    simd_gemm,
    task_extent,
)

# nf5: the simd form (one-hot column; its patch copies like im2col's)
# nf6: loop_waste (iterations of tiles that do not divide the output) and the register
#      block's live values and spill past the core's register file
LAYER_FEATURES_VERSION = "nf6"
#: General registers a register block can keep values in: r0-r12 and lr (14) less the input,
#: weight and output pointers and the loop bound (the M3 and M4 have the same register file).
BLOCK_REGISTERS = 10
OP_TYPES = ("conv2d", "depthwise_conv2d", "dense", "avg_pool", "max_pool", "add", "clamp")


def layer_features(task: Task, sched: LayerSchedule) -> dict[str, float]:
    s = resolve(task, sched)
    sig = task.signature
    t = task.type
    out = sig["out_shape"]
    ins = sig["in_shapes"][0]
    elems = math.prod(out)
    f: dict[str, float] = {f"is_{name}": float(t == name) for name in OP_TYPES}
    f["int8"] = float(task.dtype == "int8")
    kh, kw = sig.get("kernel", [1, 1])
    sh, sw = sig.get("stride", [1, 1])
    pads = sig.get("padding", [0, 0, 0, 0])
    f.update(in_h=ins[1] if len(ins) == 4 else 1, in_w=ins[2] if len(ins) == 4 else 1,
             in_c=ins[-1], out_h=out[1] if len(out) == 4 else 1,
             out_w=out[2] if len(out) == 4 else 1, out_c=out[-1], kernel_h=kh, kernel_w=kw,
             stride=max(sh, sw), padded=float(any(pads)), out_elements=elems)
    macs = task.macs
    if t == "conv2d":
        red = kh * kw * ins[3]
    elif t == "depthwise_conv2d":
        red = kh * kw
    elif t == "dense":
        red = ins[1]
    elif t in ("avg_pool", "max_pool"):
        red = kh * kw
    else:
        red = 1
    f["macs"] = macs
    f["reduction"] = red
    f["window_reads"] = elems * red
    f["requantisations"] = elems if task.dtype == "int8" and t not in ("max_pool", "clamp") \
        else 0
    checks = micro_tiles(task, s)
    f["yield_checks"] = checks
    f["work_per_check"] = elems * red / max(1, checks)
    f["tile_size"] = s.tile_size or 0
    f["micro_tile"] = s.micro_tile or 0
    f["unroll"] = s.unroll or 1
    f["channel_tile"] = s.channel_tile or 0
    # the kernel form (0 direct, 1 register-blocked, 2 im2col, 3 pointwise, 4 simd; one-hot as
    # well: the forms are categories), its register block and its reduction unrolling
    f["form"] = s.form or 0
    for name, code in (("block", 1), ("im2col", 2), ("pointwise", 3), ("simd", 4)):
        f[f"form_{name}"] = float(s.form == code)
    f["pixel_block"] = s.pixel_block or 0
    f["block_accumulators"] = (s.pixel_block or 1) * (s.unroll or 1) if s.form else 0
    f["reduction_unroll"] = s.reduction_unroll or 0
    f.update(_block_costs(task, s))
    f.update(_loop_costs(task, s))
    isz = 1 if task.dtype == "int8" else 4
    if t in ("conv2d", "depthwise_conv2d"):
        m = s.micro_tile
        c = s.channel_tile
        in_rows, in_cols = (m - 1) * sh + kh, (m - 1) * sw + kw
        cin = ins[3] if t == "conv2d" else max(1, c // sig.get("depth_multiplier", 1))
        f["granule_bytes"] = (in_rows * in_cols * cin + kh * kw * cin * c * (t == "conv2d")
                              + kh * kw * c * (t != "conv2d") + m * m * c) * isz
    elif t == "dense":
        f["granule_bytes"] = (ins[1] + ins[1] * s.micro_tile + s.micro_tile) * isz
    else:
        f["granule_bytes"] = f["work_per_check"] * isz
    return {k: float(v) for k, v in f.items()}


def _block_costs(task: Task, s: LayerSchedule) -> dict[str, float]:
    """What a blocked form computes beyond the MACs: ``block_waste`` (computed / real output
    pixels or units: a partial register block computes its edge pixel again, e.g. 4-pixel
    blocks on a 3x3 output compute 12 for 9), ``copies_per_mac`` (im2col: padded input
    bytes copied per MAC) and ``padded_share`` (output pixels whose window reads padding:
    bounds checks where the form keeps them)."""
    sig, t = task.signature, task.type
    out = {"block_waste": 1.0, "copies_per_mac": 0.0, "padded_share": 0.0}
    if t in ("conv2d", "depthwise_conv2d"):
        _n, oh, ow, k = sig["out_shape"]
        kh, kw = sig["kernel"]
        sh, sw = sig["stride"]
        pt, pb, pl, pr = sig["padding"]
        h, w = sig["in_shapes"][0][1:3]
        rows = sum(1 for y in range(oh) if y * sh - pt < 0 or y * sh - pt + kh > h)
        cols = sum(1 for x in range(ow) if x * sw - pl < 0 or x * sw - pl + kw > w)
        out["padded_share"] = 1.0 - (oh - rows) * (ow - cols) / (oh * ow)
        if s.form:
            px = s.pixel_block or 1
            span = oh * ow if flat_pixels(sig, s.form) else ow
            out["block_waste"] = -(-span // px) * px / span
            if s.form == FORM_SIMD and t == "conv2d" and not simd_gemm(sig):
                out["copies_per_mac"] = 1.0 / (s.channel_tile or k)   # the flat patch
            elif s.form == FORM_IM2COL:
                if t == "conv2d":   # a pixel's patch, once per channel tile
                    out["copies_per_mac"] = 1.0 / (s.channel_tile or k)
                else:               # the block's window, per block of px x unroll x taps
                    win = kh * ((px - 1) * sw + kw)
                    out["copies_per_mac"] = win / (px * kh * kw)
    elif t == "dense" and s.form:
        units, u = sig["out_shape"][1], s.unroll or 1
        out["block_waste"] = -(-units // u) * u / units
    return out


def _loop_costs(task: Task, s: LayerSchedule) -> dict[str, float]:
    """``loop_waste``: iterations of the tiled loops / the output's (a tile or micro-tile that
    does not divide its extent runs guarded iterations past the edge: 4-pixel tiles on a
    6-wide output iterate 8); ``block_live`` / ``block_spill``: the values a register block
    holds across its reduction (accumulators, the ``unroll`` weights one input feeds, the
    input) and how many exceed :data:`BLOCK_REGISTERS` (spilled to the stack: a load and a
    store per MAC that would be a register add)."""
    ext = task_extent(task.signature)
    out = {"loop_waste": 1.0, "block_live": 0.0, "block_spill": 0.0}
    t_, m_ = s.tile_size or 1, s.micro_tile or 1

    def iterated(n: int, t: int, m: int) -> int:
        t = min(t, n)
        return -(-n // t) * -(-t // m) * m

    if task.type in ("conv2d", "depthwise_conv2d"):
        rows, cols = ext["rows"], ext["cols"]
        if flat_pixels(task.signature, s.form):
            px = rows * cols
            out["loop_waste"] = iterated(px, t_ * t_, m_ * m_) / px
        else:
            out["loop_waste"] = iterated(rows, t_, m_) * iterated(cols, t_, m_) / (rows * cols)
    elif task.type == "dense":
        units = ext["units"]
        out["loop_waste"] = iterated(units, t_, m_) / units
    if s.form and task.type in ("conv2d", "depthwise_conv2d", "dense"):
        u = s.unroll or 1
        px = 1 if task.type == "dense" else (s.pixel_block or 1)
        live = px * u + u + 1
        out["block_live"] = float(live)
        out["block_spill"] = float(max(0, live - BLOCK_REGISTERS))
    return out


def layer_feature_names() -> list[str]:
    from .tasks import Task as _T

    probe = _T("x", "add", "int8", {"type": "add", "dtype": "int8", "in_shapes": [[1, 4]],
                                     "out_shape": [1, 4]}, [0], ["x"], 0)
    return list(layer_features(probe, LayerSchedule()))
