"""The register-blocked kernel forms of the MAC layers (conv2d, depthwise, dense).

What fast int8 code on a Cortex-M3 does, said in TVM (te + s_tir, no hand-written C):

- **register blocking**: ``pixel_block`` output pixels of a row x ``unroll`` output channels
  (dense: ``unroll`` units) are computed together: their int32 accumulators are one small
  stack array that the fully unrolled body indexes with constants, so gcc keeps it in
  registers; one input load feeds ``unroll`` MACs and one weight load ``pixel_block`` MACs;
- **packed weights**: the weights are constants, so they are stored at build time in the order
  the inner loop reads them (``packing.pack_arrays``; conv2d ``(K/u, KH, KW, C, u)``, depthwise
  ``(K/u, KH, KW, u)``, dense ``(U/u, IN, u)``): the inner loop walks one pointer;
- **zero point folded into the bias**: ``sum((x - zp) * w) + b = sum(x * w) + (b - zp *
  sum(w))``; padding reads the zero point, so its taps add ``zp * w - zp * w = 0``: the MAC
  loop has no subtraction and the folded bias is a constant too;
- **requantisation outside the MAC loop**: once per output, after the block's reduction (the
  accumulation is ``compute_at`` the channel-group loop of the output block);
- **im2col** (``form: im2col``): conv2d copies each pixel's padded input patch once per
  register block, above the channel groups that read it, a tap's channels unrolled (up to
  ``MAX_UNROLLED_TAP``: one bounds check per tap, word copies); depthwise copies the block's
  padded input window. The bounds checks of padding leave the MAC loop;
- **reduction unrolling**: the innermost reduction loop by ``reduction_unroll`` (a schedule
  parameter: the best factor differs per layer), a small depthwise window whole (0.062 ->
  0.091 MACs/cycle on DS-CNN);
- **pointwise** (``form: pointwise``): a 1x1 stride-1 unpadded conv2d is a GEMM over the
  flat pixels, so register blocks run across row ends (2 or 4 pixels on an output 5 wide).
- **simd** (``form: simd``, int8 conv2d and dense): the reduction as 4-byte groups (``rq``,
  unrolled by ``reduction_unroll``) outside the register block and each group's 4 MACs inside
  it, tensorized into one ``slicert_nn_dot4`` per accumulator (``network/simd.py``: SMLAD on
  SXTB16 pairs on the Cortex-M4); weights packed ``(K/u, G, u, 4)``; a 1x1 conv of whole
  groups of channels reads its input in place (the pointwise GEMM), any other conv a copy of
  each pixel's patch: ``(KH, KW, C4)`` with each tap's channels padded to whole groups
  (``packing.tap_channels``: at most a third more MACs; the copy unrolled per tap), else one
  flat patch padded at its end.

Partial tiles: the accumulation spans whole register blocks (a pixel past the edge computes
the edge pixel again), so its guard is per block and outside the reduction loop.

The loop nest (conv2d / depthwise; dense has units in place of pixels)::

    n, y_mac, x_mac, y_mic, x_mic, [k_mic]   macro-tiles, micro-tiles (yield after each)
      y_in, x_blk, k_blk                      one block: pixel_block pixels x unroll channels
        acc[pixel_block * unroll] = 0         (unrolled)
        [col <- padded patch]                 (im2col)
        rh, rw, rc                            reduction (rc absent for depthwise)
          pixel_block x unroll MACs           (unrolled)
        out <- requant(acc + bias')           (unrolled)

The granule is unchanged by the form: one yield check per micro-tile, so the preemption
latency stays bounded by one micro-tile whatever the register block.
"""

from __future__ import annotations

from typing import Any

from tvm import s_tir, te, tirx

from slicert_ops.codegen.lowering import YIELD_ANNOTATION

from .packing import LANES, packed_weight_shape
from .simd import INTRIN as SIMD_INTRIN
from .tasks import (
    FORM_IM2COL,
    FORM_SIMD,
    MAX_UNROLLED_WINDOW,
    flat_pixels,
    simd_gemm,
    simd_groups,
    simd_tap_channels,
)

MAC_TYPES = ("conv2d", "depthwise_conv2d", "dense")
#: The patch copy of im2col and simd convs unrolls a tap's channels up to this many (a
#: longer tap stays a loop: code size)
MAX_UNROLLED_TAP = 64
def _window(sig: dict[str, Any]) -> int:
    kh, kw = sig["kernel"]
    return kh * kw


def kernel_out_shape(task_type: str, sig: dict[str, Any], s: Any) -> tuple[int, ...]:
    """The output buffer as the kernel indexes it: NHWC, or ``(N, OH*OW, K)`` in the
    pointwise form (the same bytes: the C signature takes plain pointers)."""
    out = tuple(sig["out_shape"])
    if task_type == "conv2d" and flat_pixels(sig, s.form):
        return (out[0], out[1] * out[2], out[3])
    return out


def tiled_extent(extent: int, tile: int) -> int:
    """``extent`` rounded up to whole tiles of ``tile``."""
    return -(-extent // tile) * tile


def clamped(i: Any, extent: int, block: int) -> Any:
    """``i`` clamped to the last index where a partial block can reach past it; as it is
    where blocks tile the extent (blocks start at multiples of ``block``): the pixels of a
    block then sit at constant offsets from one pointer, and gcc shares the loads of
    neighbouring taps."""
    return tirx.min(i, extent - 1) if extent % block else i


def define_accumulate(task_type: str, sig: dict[str, Any], dtype: str, s: Any, acc_t: str,
                      in_zp: Any) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """(data, packed weight, acc): the block form's MAC stage, without bias (the epilogue adds
    it). Padding reads ``in_zp`` (int8; 0 for float32).

    ``acc`` spans whole register blocks: a pixel (unit) past the edge of a partial block
    computes the edge pixel again (its coordinates are clamped, a loop-invariant ``min``), so
    a block is computed whole or not at all: the guard of a partial tile is the same for
    every accumulator of the block and sits outside its reduction loop (HoistIfThenElse).
    Only the epilogue's stores are guarded per pixel."""
    out_shape = tuple(sig["out_shape"])
    ish = tuple(sig["in_shapes"][0])
    unroll = int(s.unroll)
    data = te.placeholder(ish, dtype, name="data")
    weight = te.placeholder(packed_weight_shape(task_type, sig, unroll, s.form), dtype,
                            name="weight")
    if s.form == FORM_SIMD:
        rq = te.reduce_axis((0, simd_groups(sig)), name="rq")
        ri = te.reduce_axis((0, LANES), name="ri")

        def wq(f):   # the packed weight of output f (channel, unit), reduction rq * 4 + ri
            return weight[f // unroll, rq, f % unroll, ri].astype(acc_t)
    if task_type == "dense" and s.form == FORM_SIMD:
        units = out_shape[1]
        acc = te.compute((out_shape[0], tiled_extent(units, unroll)), lambda b, u: te.sum(
            data[b, rq * LANES + ri].astype(acc_t) * wq(clamped(u, units, unroll)),
            axis=[rq, ri]), name="acc")
        return data, weight, acc
    if task_type == "dense":
        units = out_shape[1]
        r = te.reduce_axis((0, ish[1]), name="r")

        def dense_acc(b, u):
            uc = clamped(u, units, unroll)
            return te.sum(data[b, r].astype(acc_t)
                          * weight[uc // unroll, r, uc % unroll].astype(acc_t), axis=[r])
        acc = te.compute((out_shape[0], tiled_extent(units, unroll)), dense_acc,
                         name="acc")
        return data, weight, acc
    if task_type == "conv2d" and flat_pixels(sig, s.form):
        return _pointwise_accumulate(sig, dtype, s, acc_t, weight.shape)
    _n, h, w, c = ish
    _, oh, ow, k = out_shape
    kh, kw = sig["kernel"]
    sh, sw = sig["stride"]
    pt, pb, pl, pr = sig["padding"]
    padded = bool(pt or pb or pl or pr)
    pad_value = in_zp.astype(dtype) if in_zp is not None else tirx.const(0, dtype)
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    shape = (out_shape[0], oh, tiled_extent(ow, s.pixel_block), k)

    def pix_at(b, y, x, i, j, ch):
        iy = y * sh + i - pt
        ix = clamped(x, ow, s.pixel_block) * sw + j - pl
        v = data[b, iy, ix, ch]
        if padded:
            v = te.if_then_else(tirx.all(iy >= 0, iy < h, ix >= 0, ix < w), v, pad_value)
        return v

    def pix(b, y, x, ch):
        return pix_at(b, y, x, rh, rw, ch).astype(acc_t)

    if s.form == FORM_SIMD and simd_tap_channels(sig):
        # the patch of each pixel as (KH, KW, C4) once per register block, as im2col copies
        # it, each tap's channels padded to whole groups with zeros (their weights are zero
        # too); a tap's C4/4 groups are the innermost reduction (the packed weights' group
        # (i * KW + j) * C4/4 + q)
        c4 = simd_tap_channels(sig)

        def tap_at(b, y, x, i, j, ch):
            v = pix_at(b, y, x, i, j, tirx.min(ch, c - 1) if c4 > c else ch)
            return te.if_then_else(ch < c, v, tirx.const(0, dtype)) if c4 > c else v
        col = te.compute((*shape[:3], kh, kw, c4), tap_at, name="col")
        rq_c = te.reduce_axis((0, c4 // LANES), name="rq")
        acc = te.compute(shape, lambda b, y, x, f: te.sum(
            col[b, y, x, rh, rw, rq_c * LANES + ri].astype(acc_t)
            * weight[f // unroll, (rh * kw + rw) * (c4 // LANES) + rq_c, f % unroll,
                     ri].astype(acc_t), axis=[rh, rw, rq_c, ri]), name="acc")
    elif s.form == FORM_SIMD:
        # the flat patch of each pixel (KH*KW*C bytes in (i, j, c) order, the packed weights'
        # order), once per register block, its tail to whole 4-byte groups zero (and its
        # weights zero): the padding's bounds checks leave the MAC loop, as in im2col
        red_len, patch_len = kh * kw * c, simd_groups(sig) * LANES

        def patch_at(b, y, x, el):
            v = pix_at(b, y, x, el // (kw * c), el // c % kw, el % c)
            if patch_len > red_len:
                v = te.if_then_else(el < red_len, v, tirx.const(0, dtype))
            return v
        col = te.compute((*shape[:3], patch_len), patch_at, name="col")
        acc = te.compute(shape, lambda b, y, x, f: te.sum(
            col[b, y, x, rq * LANES + ri].astype(acc_t) * wq(f), axis=[rq, ri]), name="acc")
    elif task_type == "conv2d" and s.form == FORM_IM2COL:
        # the padded input patch of each pixel, once per register block (above the channel
        # groups that read it): the bounds checks leave the MAC loop
        col = te.compute((*shape[:3], kh, kw, c), lambda b, y, x, i, j, ch: pix_at(
            b, y, x, i, j, ch), name="col")
        rc = te.reduce_axis((0, c), name="rc")
        acc = te.compute(shape, lambda b, y, x, f: te.sum(
            col[b, y, x, rh, rw, rc].astype(acc_t)
            * weight[f // unroll, rh, rw, rc, f % unroll].astype(acc_t), axis=[rh, rw, rc]),
            name="acc")
    elif task_type == "conv2d":
        rc = te.reduce_axis((0, c), name="rc")
        acc = te.compute(shape, lambda b, y, x, f: te.sum(
            pix(b, y, x, rc) * weight[f // unroll, rh, rw, rc, f % unroll].astype(acc_t),
            axis=[rh, rw, rc]), name="acc")
    elif s.form == FORM_IM2COL:
        # depthwise: the padded input window of each register block (KH rows x the block's
        # columns x its channels), copied once; the taps then read it without bounds checks
        mult = sig.get("depth_multiplier", 1)
        ph, pw_ = h + pt + pb, w + pl + pr

        def padded_at(b, iy, ix, ch):
            v = data[b, iy - pt, ix - pl, ch]
            if padded:
                v = te.if_then_else(tirx.all(iy >= pt, iy < h + pt, ix >= pl, ix < w + pl),
                                    v, pad_value)
            return v
        win = te.compute((ish[0], ph, pw_, c), padded_at, name="col")
        acc = te.compute(shape, lambda b, y, x, f: te.sum(
            win[b, y * sh + rh, clamped(x, ow, s.pixel_block) * sw + rw,
                f // mult if mult > 1 else f].astype(acc_t)
            * weight[f // unroll, rh, rw, f % unroll].astype(acc_t), axis=[rh, rw]),
            name="acc")
    else:
        mult = sig.get("depth_multiplier", 1)
        acc = te.compute(shape, lambda b, y, x, f: te.sum(
            pix(b, y, x, f // mult if mult > 1 else f)
            * weight[f // unroll, rh, rw, f % unroll].astype(acc_t), axis=[rh, rw]),
            name="acc")
    return data, weight, acc


def _pointwise_accumulate(sig: dict[str, Any], dtype: str, s: Any, acc_t: str,
                         wshape: Any) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """A 1x1 stride-1 unpadded conv2d as a GEMM: (N, P, C) x packed (K/u, 1, 1, C, u) over
    the P = OH*OW flat pixels; a register block is ``pixel_block`` consecutive pixels, across
    row ends. No padding, so no zero-point reads: the folded bias does all of it."""
    n, h, w, c = sig["in_shapes"][0]
    pixels, unroll = h * w, int(s.unroll)
    data = te.placeholder((n, pixels, c), dtype, name="data")
    weight = te.placeholder(tuple(wshape), dtype, name="weight")
    shape = (n, tiled_extent(pixels, s.pixel_block), sig["out_shape"][3])
    if s.form == FORM_SIMD:   # (K/u, C/4, u, 4): 4-byte groups of channels
        rq = te.reduce_axis((0, c // LANES), name="rq")
        ri = te.reduce_axis((0, LANES), name="ri")
        acc = te.compute(shape, lambda b, p, f: te.sum(
            data[b, clamped(p, pixels, s.pixel_block), rq * LANES + ri].astype(acc_t)
            * weight[f // unroll, rq, f % unroll, ri].astype(acc_t), axis=[rq, ri]),
            name="acc")
        return data, weight, acc
    rc = te.reduce_axis((0, c), name="rc")
    acc = te.compute(shape, lambda b, p, f: te.sum(
        data[b, clamped(p, pixels, s.pixel_block), rc].astype(acc_t)
        * weight[f // unroll, 0, 0, rc, f % unroll].astype(acc_t), axis=[rc]), name="acc")
    return data, weight, acc


def _unroll_below(sch: s_tir.Schedule, block: Any, depth: int, only: list[Any] | None = None
                  ) -> None:
    """Unroll the loops of ``block`` from ``depth`` on (``only``: just these), except unit
    loops: marking a unit loop unrolled unrolls its parent."""
    targets = [sch.get(lp) for lp in only] if only is not None else None
    for lp in sch.get_loops(block)[depth:]:
        loop = sch.get(lp)
        if targets is not None and not any(loop.same_as(t) for t in targets):
            continue
        if int(loop.extent) > 1:
            sch.unroll(lp)


def schedule_blocked(sch: s_tir.Schedule, task_type: str, sig: dict[str, Any], s: Any) -> None:
    """Tile, block and unroll (``s``: a resolved LayerSchedule of the block form).

    The output block is tiled; the accumulation is computed at the channel-group (dense:
    unit-group) loop, so its spatial loops are the register block and the reduction loops
    go outside them."""
    out = sch.get_sblock("out")
    if task_type == "dense":
        n, u = sch.get_loops(out)
        u_mac, u_t = sch.split(u, [None, s.tile_size])
        u_mic, u_in = sch.split(u_t, [None, s.micro_tile])
        u_blk, u_i = sch.split(u_in, [None, s.unroll])
        anchor, yield_loop, block_extents = u_blk, u_mic, [s.unroll]
        inner = [u_i]
    elif flat_pixels(sig, s.form):   # flat pixels: macro- and micro-tiles of tile^2, micro^2
        n, p, k = sch.get_loops(out)
        p_mac, p_t = sch.split(p, [None, s.tile_size ** 2])
        p_mic, p_in = sch.split(p_t, [None, s.micro_tile ** 2])
        x_blk, x_i = sch.split(p_in, [None, s.pixel_block])
        if s.channel_tile < sig["out_shape"][3]:
            k_mic, k_t = sch.split(k, [None, s.channel_tile])
            k_blk, k_i = sch.split(k_t, [None, s.unroll])
            sch.reorder(n, p_mac, p_mic, k_mic, x_blk, k_blk, x_i, k_i)
            yield_loop = k_mic
        else:
            k_blk, k_i = sch.split(k, [None, s.unroll])
            sch.reorder(n, p_mac, p_mic, x_blk, k_blk, x_i, k_i)
            yield_loop = p_mic
        anchor, block_extents = k_blk, [s.pixel_block, s.unroll]
        inner = [x_i, k_i]
    else:
        n, y, x, k = sch.get_loops(out)
        y_mac, y_t = sch.split(y, [None, s.tile_size])
        x_mac, x_t = sch.split(x, [None, s.tile_size])
        y_mic, y_in = sch.split(y_t, [None, s.micro_tile])
        x_mic, x_in = sch.split(x_t, [None, s.micro_tile])
        x_blk, x_i = sch.split(x_in, [None, s.pixel_block])
        if s.channel_tile < sig["out_shape"][3]:
            k_mic, k_t = sch.split(k, [None, s.channel_tile])
            k_blk, k_i = sch.split(k_t, [None, s.unroll])
            sch.reorder(n, y_mac, x_mac, y_mic, x_mic, k_mic, y_in, x_blk, k_blk, x_i, k_i)
            yield_loop = k_mic
        else:
            k_blk, k_i = sch.split(k, [None, s.unroll])
            sch.reorder(n, y_mac, x_mac, y_mic, x_mic, y_in, x_blk, k_blk, x_i, k_i)
            yield_loop = x_mic
        anchor, block_extents = k_blk, [s.pixel_block, s.unroll]
        inner = [x_i, k_i]
    acc = sch.get_sblock("acc")
    sch.compute_at(acc, anchor)
    if s.form == FORM_IM2COL or (s.form == FORM_SIMD and task_type == "conv2d"
                                 and not simd_gemm(sig)):
        col = sch.get_sblock("col")
        sch.compute_at(col, x_blk if task_type == "conv2d" else anchor)
        tap = simd_tap_channels(sig) if s.form == FORM_SIMD else \
            sig["in_shapes"][0][3] if task_type == "conv2d" else 0
        if tap and tap <= MAX_UNROLLED_TAP:
            # a tap's channels copied unrolled: gcc checks the tap's bounds once and merges
            # the byte copies into words
            sch.unroll(sch.get_loops(col)[-1])
    depth = _depth_of(sch, acc, anchor) + 1
    below = sch.get_loops(acc)[depth:]
    # compute_at makes one spatial loop per block extent > 1, then the reduction loops
    n_spatial = sum(1 for e in block_extents if e > 1)
    spatial, red = below[:n_spatial], below[n_spatial:]
    if s.form == FORM_SIMD:
        _schedule_simd(sch, acc, depth, spatial, red, s)
    else:
        _schedule_reduction(sch, task_type, sig, s, acc, depth, spatial, red)
    for lp in spatial:
        sch.unroll(lp)
    for lp in inner:
        if int(sch.get(lp).extent) > 1:
            sch.unroll(lp)
    sch.annotate(yield_loop, YIELD_ANNOTATION, 1)


def _schedule_reduction(sch: s_tir.Schedule, task_type: str, sig: dict[str, Any], s: Any,
                        acc: Any, depth: int, spatial: list[Any], red: list[Any]) -> None:
    """The reduction of the scalar blocked forms: outside the register block, the innermost
    loop unrolled by ``reduction_unroll`` (a small depthwise window whole)."""
    if spatial and red:
        sch.reorder(*red, *spatial)
    if task_type == "depthwise_conv2d" and _window(sig) <= MAX_UNROLLED_WINDOW:
        for lp in red:  # the whole window: gcc folds the taps' offsets and bounds checks
            sch.unroll(lp)
    elif red and s.reduction_unroll and s.reduction_unroll > 1:
        # the innermost loop above 1 (tasks.reduction_extent; check_schedule: it divides)
        inner_red = [lp for lp in red if int(sch.get(lp).extent) > 1][-1]
        if int(sch.get(inner_red).extent) == s.reduction_unroll:
            sch.unroll(inner_red)
        else:
            r_o, r_i = sch.split(inner_red, [None, s.reduction_unroll])
            red = [lp for lp in sch.get_loops(acc)[depth:] if not any(
                sch.get(lp).same_as(sch.get(sp)) for sp in spatial)]
            sch.reorder(*red, *spatial)
            sch.unroll(r_i)
    if red:
        init = sch.decompose_reduction(acc, red[0])
        _unroll_below(sch, init, depth)


def _schedule_simd(sch: s_tir.Schedule, acc: Any, depth: int, spatial: list[Any],
                   red: list[Any], s: Any) -> None:
    """The simd form's reduction: the 4-byte groups (``rq``, unrolled by
    ``reduction_unroll``) outside the register block, each group's 4 MACs inside it,
    tensorized into one ``slicert_nn_dot4`` call per accumulator."""
    *groups, lanes = red      # (taps,) groups, lanes; the innermost group loop is rq
    if groups and s.reduction_unroll and s.reduction_unroll > 1:
        *taps, rq = groups
        if int(sch.get(rq).extent) == s.reduction_unroll:
            unrolled = rq
        else:
            rq, unrolled = sch.split(rq, [None, s.reduction_unroll])
            taps.append(rq)
        groups = [*taps, unrolled]
        sch.reorder(*groups, *spatial, lanes)
        sch.unroll(unrolled)
    else:
        sch.reorder(*groups, *spatial, lanes)
    init = sch.decompose_reduction(acc, groups[0] if groups else spatial[0] if spatial
                                   else lanes)
    _unroll_below(sch, init, depth)
    # a partial tile's guard (T.where) stays on an outer block: tensorize matches the
    # intrinsic's description only in a block without a predicate
    update = sch.get_sblock("acc_update")
    sch.blockize(lanes)
    from . import simd_intrin  # noqa: F401 - registers SIMD_INTRIN (TVMScript parse)

    sch.tensorize(sch.get_loops(update)[-1], SIMD_INTRIN)


def _depth_of(sch: s_tir.Schedule, block: Any, loop: Any) -> int:
    target = sch.get(loop)
    for i, lp in enumerate(sch.get_loops(block)):
        if sch.get(lp).same_as(target):
            return i
    raise RuntimeError("loop is not above the block")
