"""Tuning tasks and per-layer schedule spaces (pure Python: no TVM).

A **task** is one kernel to tune, as in meta_schedule's task extraction: ops whose kernels
are identical (type, dtype, shapes, kernel, stride, padding, depth multiplier) share a task.
Quantisation values (zero points, multipliers, clamps) are kernel *arguments*, not constants,
so one generated function serves every op of its task. A layer given a schedule space of its
own (``parameters.layers.<name>``) gets a task of its own.

Schedule parameters (:class:`LayerSchedule`) per op type:

- conv2d, depthwise_conv2d: ``tile_size`` (macro-tile edge, output pixels), ``micro_tile``
  (pixels per side of the preemption granule), ``channel_tile`` (output channels of the
  granule: a yield check after every micro_tile x micro_tile pixels x channel_tile channels;
  default all channels, fewer when one pixel x all channels exceeds ~4096 MACs), ``unroll``
  (output channels computed together, innermost, unrolled; divides channel_tile);
- dense: ``tile_size`` (output units), ``micro_tile`` (units per yield check), ``unroll``
  (reduction unroll);
- avg_pool, max_pool: ``micro_tile`` output rows x ``channel_tile`` channels per yield check
  (default: one row, all channels unless a row is more than ~4096 window reads);
- add, clamp (relu): ``micro_tile`` = elements per yield check.

``experiment.parameters`` of a network manifest::

    parameters:
      conv2d: {tile_size: [4, 8], unroll: [1, 2]}   # per op type
      dense: {micro_tile: [2, 4]}
      layers:                                        # per layer name (wins)
        conv1: {tile_size: [8], micro_tile: [1, 2]}
      slice: [64]                                    # network-wide (runtime option)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .network import Network, Op
from .packing import LANES, tap_channels
from .spec import Problem

SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "conv2d": ("tile_size", "micro_tile", "channel_tile", "unroll", "form", "pixel_block",
               "reduction_unroll"),
    "depthwise_conv2d": ("tile_size", "micro_tile", "channel_tile", "unroll", "form",
                         "pixel_block", "reduction_unroll"),
    "dense": ("tile_size", "micro_tile", "unroll", "form", "reduction_unroll"),
    "avg_pool": ("micro_tile", "channel_tile"),
    "max_pool": ("micro_tile", "channel_tile"),
    "add": ("micro_tile",),
    "clamp": ("micro_tile",),
}
#: Op type names accepted under ``parameters`` (layer type names map to op types).
PARAM_TYPES = {"conv2d": "conv2d", "depthwise_conv2d": "depthwise_conv2d", "dense": "dense",
               "avg_pool": "avg_pool", "max_pool": "max_pool", "add": "add",
               "relu": "clamp", "relu6": "clamp", "clamp": "clamp"}
NETWORK_KEYS = ("slice",)
#: Default granule targets: MACs (conv/dense) or elements (pool/elementwise) per yield check.
DEFAULT_MICRO_MACS = 4096
DEFAULT_ELEMENTWISE_GRANULE = 256
#: Window reads per pooling granule; depthwise MACs cost ~2x a conv2d MAC (one requantisation
#: per 9 MACs), so its granule is half as many MACs.
DEFAULT_POOL_TAPS = 4096
DEPTHWISE_MAC_FACTOR = 2
#: The default register block: pixels x channels (conv2d, depthwise), units (dense).
DEFAULT_BLOCK_PIXELS = 2
DEFAULT_BLOCK_CHANNELS = 4
DEFAULT_BLOCK_UNITS = 4
MAX_UNROLL_BYTES = 1024  # accumulators must stay a C stack array (see codegen/spec.py)
#: Kernel forms (``form``): 0 the direct loop nest (the previous generator: one pixel x
#: ``unroll`` channels, zero point subtracted per MAC, requantisation per output), 1 the
#: register-blocked form (``network/blocked.py``: ``pixel_block`` pixels x ``unroll``
#: channels of accumulators, packed weights, zero point folded into the bias), 2 im2col (the
#: block form reading a padded copy of each patch), 3 pointwise (a 1x1 stride-1 unpadded
#: conv2d as a GEMM over the flattened pixels: register blocks run across rows, so a block of
#: 2 or 4 pixels fits an output 5 pixels wide), 4 simd (int8 conv2d and dense: four MACs per
#: step of the ``network/simd.py`` intrinsic, SMLAD on SXTB16 pairs on a core with the DSP
#: extension; a 1x1 conv2d of a multiple of 4 channels as the pointwise GEMM, any other conv2d
#: through an im2col patch: its taps' channels padded to whole 4-byte groups where that adds
#: at most a third, else one flat patch padded at its end). Names are accepted in a manifest.
FORM_DIRECT, FORM_BLOCK, FORM_IM2COL, FORM_POINTWISE, FORM_SIMD = 0, 1, 2, 3, 4
FORMS = {"direct": FORM_DIRECT, "block": FORM_BLOCK, "im2col": FORM_IM2COL,
         "pointwise": FORM_POINTWISE, "simd": FORM_SIMD}
BLOCKED_FORMS = (FORM_BLOCK, FORM_IM2COL, FORM_POINTWISE, FORM_SIMD)
BLOCKED_TYPES = ("conv2d", "depthwise_conv2d", "dense")
#: The register file: r0-r12 and lr; a block of more accumulators than this spills.
MAX_BLOCK_ACCUMULATORS = 16
#: The blocked forms unroll their innermost reduction loop (``reduction_unroll``) by default
#: by the largest divisor of its extent up to this (measured on DS-CNN: conv 0.161 -> 0.183,
#: pointwise 0.189 -> 0.217 MACs/cycle at 4; the best factor differs per layer: a pointwise
#: 64 -> 64 layer gains at 8 or 16, a 10x4 conv loses). A depthwise window of at most
#: MAX_UNROLLED_WINDOW taps is unrolled whole instead.
DEFAULT_REDUCTION_UNROLL = 4
MAX_UNROLLED_WINDOW = 25


#: ``signature["output"]`` of a single operator (``codegen.spec.operator_signature``): the
#: kernel writes its int32 (int8 inputs) or float32 accumulators, with no input zero point,
#: bias, requantisation or clamp; a dense operator's weights are ``(IN, OUT)`` (a layer's are
#: ``(OUT, IN)``, as TFLite stores them).
ACCUMULATOR = "accumulator"


def accumulator_output(sig: dict[str, Any]) -> bool:
    return sig.get("output") == ACCUMULATOR


@dataclass(frozen=True)
class LayerSchedule:
    tile_size: int | None = None
    micro_tile: int | None = None
    unroll: int | None = None
    channel_tile: int | None = None
    form: int | None = None
    pixel_block: int | None = None
    reduction_unroll: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        d = {"tile_size": self.tile_size, "micro_tile": self.micro_tile,
             "unroll": self.unroll, "channel_tile": self.channel_tile, "form": self.form,
             "pixel_block": self.pixel_block}
        if self.reduction_unroll is not None:  # a blocked form's (absent: ids of before)
            d["reduction_unroll"] = self.reduction_unroll
        return d

    @property
    def blocked(self) -> bool:
        """The register-blocked forms (block, im2col, pointwise, simd): packed weights, folded
        zero point."""
        return self.form in BLOCKED_FORMS


@dataclass
class Task:
    """One tuning task: a kernel shared by the ops in ``ops`` (execution indices)."""

    key: str
    type: str
    dtype: str
    signature: dict[str, Any]     # what makes the kernel (shapes, geometry)
    ops: list[int] = field(default_factory=list)
    layer_names: list[str] = field(default_factory=list)
    macs: int = 0                 # per call

    @property
    def weight(self) -> int:
        """How many times the kernel runs per inference (meta_schedule's task weight)."""
        return len(self.ops)

    @property
    def entry(self) -> str:
        return f"slicert_nn_{self.type}_{self.key[:10]}"


def op_signature(op: Op, dtype: str) -> dict[str, Any]:
    """What makes an op's kernel: its type (a standalone relu is a clamp op), the dtype and
    the layer's geometry (shapes, window, depth multiplier; not its name or filters, which
    the output shape already says)."""
    d = op.layer.describe()
    keep = ("in_shapes", "out_shape", "kernel", "stride", "padding")
    sig: dict[str, Any] = {"type": op.type, "dtype": dtype, **{k: d[k] for k in keep if k in d}}
    if op.type == "depthwise_conv2d":
        sig["depth_multiplier"] = d["depth_multiplier"]
    return sig


def extract_tasks(net: Network, per_layer: set[str] | frozenset[str] = frozenset()
                  ) -> list[Task]:
    """Tasks in order of first use; ``per_layer`` names layers that get a task of their own."""
    tasks: dict[str, Task] = {}
    for op in net.ops:
        sig = op_signature(op, net.dtype)
        keyed = dict(sig)
        own = [n for n in op.layer_names if n in per_layer]
        if own:
            keyed["layer"] = own[0]
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        task = tasks.get(key)
        if task is None:
            macs = op.layer.macs
            task = tasks[key] = Task(key, op.type, net.dtype, sig, macs=macs)
        task.ops.append(op.index)
        task.layer_names.append(op.label)
    return list(tasks.values())


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def task_extent(sig: dict[str, Any]) -> dict[str, int]:
    """The loop extents of a task's signature: rows, cols, channels and reduction (convs),
    units and reduction (dense), rows, cols, channels and taps (pools), else elements."""
    out = sig["out_shape"]
    if sig["type"] in ("conv2d", "depthwise_conv2d"):
        kh, kw = sig["kernel"]
        red = kh * kw * (sig["in_shapes"][0][3] if sig["type"] == "conv2d" else 1)
        return {"rows": out[1], "cols": out[2], "channels": out[3], "reduction": red}
    if sig["type"] == "dense":
        return {"units": out[1], "reduction": sig["in_shapes"][0][1]}
    if sig["type"] in ("avg_pool", "max_pool"):
        kh, kw = sig["kernel"]
        return {"rows": out[1], "cols": out[2], "channels": out[3], "taps": kh * kw}
    return {"elements": math.prod(out)}


def default_schedule(task: Task, tile_size: int | None = None) -> LayerSchedule:
    """A sensible schedule: ~:data:`DEFAULT_MICRO_MACS` MACs (or a row / 256 elements) between
    yield checks, macro-tiles of 8 pixels, up to 4 output channels unrolled. With
    ``tile_size`` given, the micro-tile is the default for that tile."""
    ext = task_extent(task.signature)
    t = task.type
    if t in ("conv2d", "depthwise_conv2d"):
        edge = min(ext["rows"], ext["cols"])
        tile = tile_size or max(d for d in (1, 2, 4, 8) if d <= edge)
        per_pixel = ext["channels"] * ext["reduction"]
        micro = max([d for d in _divisors(tile) if d * d * per_pixel <= _mac_budget(t)]
                    or [1])
        unroll = max(d for d in _divisors(ext["channels"]) if d <= DEFAULT_BLOCK_CHANNELS)
        form = default_form(task, default_pixel_block(micro))
        return LayerSchedule(tile, micro, unroll, default_channel_tile(task, unroll), form,
                             default_pixel_block(micro, form))
    if t == "dense":
        units = ext["units"]
        tile = tile_size or max(d for d in (1, 2, 4, 8, 16, 32) if d <= units)
        micro = max([d for d in _divisors(tile) if d * ext["reduction"] <= DEFAULT_MICRO_MACS]
                    or [1])
        unroll = max(d for d in _divisors(math.gcd(units, micro)) if d <= DEFAULT_BLOCK_UNITS)
        return LayerSchedule(tile, micro, unroll, form=FORM_BLOCK)
    if t in ("avg_pool", "max_pool"):
        c, per_channel_row = ext["channels"], ext["cols"] * ext["taps"]
        chan = max([d for d in _divisors(c) if d * per_channel_row <= DEFAULT_POOL_TAPS]
                   or [1])
        return LayerSchedule(micro_tile=1, channel_tile=chan)
    return LayerSchedule(micro_tile=min(DEFAULT_ELEMENTWISE_GRANULE, ext["elements"]))


def default_form(task: Task, pixel_block: int) -> int:
    """pointwise for a 1x1 stride-1 unpadded conv2d, im2col for a padded conv2d whose patch
    fits a stack array (the bounds checks leave the MAC loop), else the register-blocked
    form."""
    sig = task.signature
    if task.type == "dense":
        return FORM_BLOCK
    if is_pointwise(sig):
        return FORM_POINTWISE
    if task.type == "conv2d" and any(sig["padding"]):
        kh, kw = sig["kernel"]
        if (pixel_block * kh * kw * sig["in_shapes"][0][3] * _itemsize(task)
                < MAX_UNROLL_BYTES):
            return FORM_IM2COL
    return FORM_BLOCK


def reduction_extent(task: Task, form: int | None = None) -> int:
    """Extent of the innermost reduction loop a blocked kernel of the task unrolls by
    ``reduction_unroll``: input channels (dense: features), else the innermost window
    dimension above 1; 1 where there is none (a depthwise window unrolled whole). The simd
    form: the 4-byte groups of its innermost reduction loop (:func:`simd_inner_groups`)."""
    sig = task.signature
    if form == FORM_SIMD:
        return simd_inner_groups(sig)
    if task.type == "dense":
        return int(sig["in_shapes"][0][1])
    kh, kw = sig["kernel"]
    if task.type == "depthwise_conv2d":
        return 1 if kh * kw <= MAX_UNROLLED_WINDOW else (kw if kw > 1 else kh)
    c = int(sig["in_shapes"][0][3])
    return next((e for e in (c, kw, kh) if e > 1), 1)


def default_reduction_unroll(task: Task, form: int | None = None) -> int:
    return max(d for d in _divisors(reduction_extent(task, form))
               if d <= DEFAULT_REDUCTION_UNROLL)


def simd_gemm(sig: dict[str, Any]) -> bool:
    """The simd form of this conv2d reads its input in place (the pointwise GEMM): a 1x1
    stride-1 unpadded conv2d whose channels are whole 4-byte groups."""
    return is_pointwise(sig) and sig["in_shapes"][0][3] % LANES == 0


def simd_patch(sig: dict[str, Any]) -> int:
    """Bytes of one pixel's flat patch in the simd form (conv2d: KH*KW*C rounded up to whole
    4-byte groups, the tail zero; dense: the input features)."""
    if sig["type"] == "dense":
        return int(sig["in_shapes"][0][1])
    kh, kw = sig["kernel"]
    c = int(sig["in_shapes"][0][3])
    red = kh * kw * (tap_channels(c) or c)
    return -(-red // LANES) * LANES


def simd_groups(sig: dict[str, Any]) -> int:
    """4-byte groups of one output's reduction in the simd form."""
    return simd_patch(sig) // LANES


def simd_tap_channels(sig: dict[str, Any]) -> int | None:
    """C4, the channels per tap of a conv2d's simd patch ``(KH, KW, C4)`` (C rounded up to
    whole 4-byte groups, ``packing.tap_channels``: at most a third more), or None for a flat
    patch. With taps the patch keeps its loops (no index division, one bounds check per tap,
    word copies) and the innermost reduction is the C4/4 groups of a tap."""
    if sig["type"] != "conv2d":
        return None
    return tap_channels(int(sig["in_shapes"][0][3]))


def simd_inner_groups(sig: dict[str, Any]) -> int:
    """Extent of the simd form's innermost reduction loop (``reduction_unroll`` divides it):
    a tap's C4/4 groups (:func:`simd_tap_channels`), else all of the flat patch's."""
    c4 = simd_tap_channels(sig)
    return c4 // LANES if c4 else simd_groups(sig)


def flat_pixels(sig: dict[str, Any], form: int | None) -> bool:
    """The form runs register blocks over the flattened pixels (pointwise; simd on a 1x1
    conv2d it reads in place)."""
    return form == FORM_POINTWISE or (form == FORM_SIMD and sig.get("type") == "conv2d"
                                      and simd_gemm(sig))


def simd_unfit(task: Task) -> str | None:
    """Why the simd form cannot compute this task (None: it can)."""
    t, sig = task.type, task.signature
    if t not in ("conv2d", "dense"):
        return (f"form: simd is a conv2d and dense form (a {t}'s channels share no "
                "reduction to pair): use block or im2col")
    if task.dtype != "int8":
        return f"form: simd multiplies int8 pairs; this {t} is {task.dtype}: use block"
    if t == "dense" and simd_patch(sig) % LANES:
        return (f"form: simd reads 4 input features per step; this dense has "
                f"{simd_patch(sig)}, not a multiple of 4: use block")
    return None


def is_pointwise(sig: dict[str, Any]) -> bool:
    """A 1x1 conv2d with stride 1 and no padding: its output pixels are its input pixels, so
    the pixels can be one flat axis (the pointwise form)."""
    return (sig["type"] == "conv2d" and tuple(sig["kernel"]) == (1, 1)
            and tuple(sig["stride"]) == (1, 1) and not any(sig["padding"]))


def block_span(form: int | None, micro_tile: int, sig: dict[str, Any] | None = None) -> int:
    """Output pixels along the axis a register block runs on, per micro-tile: a row of the
    micro-tile, or all of its micro_tile^2 pixels where the form flattens them
    (:func:`flat_pixels`; ``sig`` is needed for the simd form)."""
    flat = form == FORM_POINTWISE or (sig is not None and flat_pixels(sig, form))
    return micro_tile * micro_tile if flat else micro_tile


def _itemsize(task: Task) -> int:
    return 1 if task.dtype == "int8" else 4


def default_pixel_block(micro_tile: int, form: int | None = None,
                        sig: dict[str, Any] | None = None) -> int:
    """Output pixels per register block: the largest divisor of the micro-tile's block span
    (:func:`block_span`) up to :data:`DEFAULT_BLOCK_PIXELS`."""
    return max(d for d in _divisors(block_span(form, micro_tile, sig))
               if d <= DEFAULT_BLOCK_PIXELS)


def _mac_budget(op_type: str) -> int:
    return DEFAULT_MICRO_MACS // (DEPTHWISE_MAC_FACTOR if op_type == "depthwise_conv2d" else 1)


def default_channel_tile(task: Task, unroll: int) -> int:
    """All output channels, unless one pixel x all channels is more than
    :data:`DEFAULT_MICRO_MACS` MACs: then the most channels (a multiple of ``unroll``) that
    stay within it, at least ``unroll``."""
    ext = task_extent(task.signature)
    k, red = ext["channels"], ext["reduction"]
    budget = _mac_budget(task.type)
    if k * red <= budget or k % unroll:
        return k
    fits = [d for d in _divisors(k) if d % unroll == 0 and d * red <= budget]
    return max(fits) if fits else unroll


def check_schedule(task: Task, sched: LayerSchedule) -> list[str]:
    """Why the schedule is impossible for the task (field: problem (valid values))."""
    ext = task_extent(task.signature)
    t = task.type
    errs: list[str] = []
    allowed = SCHEDULE_KEYS[t]
    for k, v in sched.to_dict().items():
        if v is None:
            continue
        if k not in allowed:
            errs.append(f"{k}: not a parameter of {t} (valid: {', '.join(allowed)})")
        elif k == "form":
            if v not in FORMS.values():
                errs.append(f"form: {v!r} is not a kernel form (valid: "
                            + ", ".join(f"{n} ({i})" for n, i in FORMS.items()) + ")")
        elif not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            errs.append(f"{k}: {v!r} must be a positive integer")
    if errs:
        return errs
    form = sched.form if sched.form is not None else (
        default_form(task, sched.pixel_block or 1) if t in BLOCKED_TYPES else None)
    if sched.pixel_block is not None and form == FORM_DIRECT:
        errs.append("pixel_block: only the blocked forms (form: block, im2col, pointwise, "
                    "simd) have register blocks")
        return errs
    if sched.reduction_unroll is not None:
        red = reduction_extent(task, form)
        if form == FORM_DIRECT:
            errs.append("reduction_unroll: a parameter of the blocked forms (form: block, "
                        "im2col, pointwise, simd); the direct form unrolls by unroll")
        elif red % sched.reduction_unroll:
            what = ("a depthwise window unrolled whole" if red == 1 and t ==
                    "depthwise_conv2d" else f"the simd form's innermost reduction loop "
                    f"({red} 4-byte groups)" if form == FORM_SIMD else
                    f"the innermost reduction loop ({red})")
            errs.append(f"reduction_unroll: {sched.reduction_unroll} does not divide {what} "
                        f"(valid: {', '.join(map(str, _divisors(red)))})")
        if errs:
            return errs
    if form == FORM_IM2COL and t == "dense":
        errs.append("form: im2col is a convolution form (dense: direct or block)")
        return errs
    if form == FORM_POINTWISE and not is_pointwise(task.signature):
        sig = task.signature
        errs.append("form: pointwise needs a 1x1 conv2d with stride 1 and no padding (this "
                    f"{t}: kernel {list(sig.get('kernel', []))}, stride "
                    f"{list(sig.get('stride', []))}, padding {list(sig.get('padding', []))}); "
                    "use block or im2col")
        return errs
    if form == FORM_SIMD:
        why = simd_unfit(task)
        if why:
            errs.append(why)
            return errs
    d = default_schedule(task, sched.tile_size)
    tile = sched.tile_size or d.tile_size
    micro = sched.micro_tile or d.micro_tile
    unroll = sched.unroll or d.unroll
    if t == "dense" and sched.unroll is None:
        unroll = resolve(task, dataclasses.replace(sched, micro_tile=micro)).unroll
    if t in ("conv2d", "depthwise_conv2d") and not errs:
        chan = sched.channel_tile or default_channel_tile(task, unroll)
        k = ext["channels"]
        if k % chan:
            errs.append(f"channel_tile: {chan} does not divide the output channels ({k})")
        elif chan % unroll:
            errs.append(f"unroll: {unroll} does not divide channel_tile {chan} (the channels "
                        "of one micro-tile)")
    if t in ("conv2d", "depthwise_conv2d", "dense"):
        edge = min(ext["rows"], ext["cols"]) if t != "dense" else ext["units"]
        if flat_pixels(task.signature, form):   # a macro-tile is tile_size^2 flat pixels
            edge = math.isqrt(ext["rows"] * ext["cols"] - 1) + 1
        if tile > edge:
            errs.append(f"tile_size: {tile} is larger than the output extent {edge} "
                        f"(valid 1..{edge})")
        elif tile % micro:
            errs.append(f"micro_tile: {micro} does not divide tile_size {tile} (valid: "
                        f"{', '.join(map(str, _divisors(tile)))})")
        blocked_dense = t == "dense" and form in BLOCKED_FORMS
        split = ext["channels"] if t != "dense" else (
            ext["units"] if blocked_dense else ext["reduction"])
        what = "output channels" if t != "dense" else (
            "units (the block form's register block)" if blocked_dense else "input features")
        if split % unroll and not blocked_dense:
            divs = _divisors(split)
            shown = ", ".join(map(str, divs)) if len(divs) <= 16 else f"divisors of {split}"
            errs.append(f"unroll: {unroll} does not divide the {what} ({split}); valid: "
                        f"{shown}")
        elif t != "dense" and unroll * 4 >= MAX_UNROLL_BYTES:
            errs.append(f"unroll: {unroll} accumulators need {unroll * 4} bytes, they must "
                        f"stay below {MAX_UNROLL_BYTES}")
        elif blocked_dense and micro % unroll:
            errs.append(f"unroll: {unroll} units per register block do not divide micro_tile "
                        f"{micro} (a block must not straddle two micro-tiles)")
        elif form in BLOCKED_FORMS and t != "dense":
            sig = task.signature
            px = sched.pixel_block or default_pixel_block(micro, form, sig)
            span = block_span(form, micro, sig)
            kh, kw = sig["kernel"]
            sw = sig["stride"][1]
            patch = (px * simd_patch(sig) if form == FORM_SIMD else
                     (px * kh * kw * sig["in_shapes"][0][3] if t == "conv2d"
                      else kh * ((px - 1) * sw + kw) * unroll) * _itemsize(task))
            copies = form == FORM_IM2COL or (form == FORM_SIMD and not simd_gemm(sig))
            if span % px:
                of = (f"the {span} pixels of micro_tile {micro}" if flat_pixels(sig, form)
                      else f"micro_tile {micro}")
                errs.append(f"pixel_block: {px} does not divide {of} (valid: "
                            f"{', '.join(map(str, _divisors(span)))})")
            elif px * unroll > MAX_BLOCK_ACCUMULATORS:
                errs.append(f"pixel_block: {px} pixels x unroll {unroll} channels are "
                            f"{px * unroll} accumulators; at most {MAX_BLOCK_ACCUMULATORS} "
                            "fit the register file")
            elif copies and patch >= MAX_UNROLL_BYTES:
                name = next(n for n, i in FORMS.items() if i == form)
                errs.append(f"form: {name} patch of {px} pixels is {patch} bytes; it must stay "
                            f"below {MAX_UNROLL_BYTES} (a stack array): use form block or a "
                            "smaller pixel_block")
    elif t in ("avg_pool", "max_pool"):
        if micro > ext["rows"]:
            errs.append(f"micro_tile: {micro} rows is more than the {ext['rows']} output rows")
        chan = sched.channel_tile or d.channel_tile
        if ext["channels"] % chan:
            errs.append(f"channel_tile: {chan} does not divide the channels "
                        f"({ext['channels']})")
    else:
        if micro > ext["elements"]:
            errs.append(f"micro_tile: {micro} elements is more than the tensor's "
                        f"{ext['elements']}")
    return errs


def resolve(task: Task, sched: LayerSchedule) -> LayerSchedule:
    """Fill the parameters left out with the defaults (only those the type uses)."""
    d = default_schedule(task, sched.tile_size)
    keys = SCHEDULE_KEYS[task.type]
    vals = {k: (getattr(sched, k) if getattr(sched, k) is not None else getattr(d, k))
            for k in keys}
    if "channel_tile" in vals and sched.channel_tile is None and "unroll" in vals:
        vals["channel_tile"] = default_channel_tile(task, vals["unroll"])
    if "form" in vals and sched.form is None and vals.get("pixel_block") is not None:
        vals["form"] = default_form(task, sched.pixel_block or default_pixel_block(
            vals["micro_tile"]))
    if "form" in vals:
        if vals["form"] == FORM_DIRECT:
            vals.pop("pixel_block", None)
            vals.pop("reduction_unroll", None)
            if sched.unroll is None and task.type == "dense":  # the direct form's default
                vals["unroll"] = max(d for d in _divisors(task_extent(task.signature)["reduction"])
                                     if d <= 4)
        elif "pixel_block" in vals and sched.pixel_block is None:
            vals["pixel_block"] = default_pixel_block(vals["micro_tile"], vals["form"],
                                                      task.signature)
        elif task.type == "dense" and sched.unroll is None:
            units = task_extent(task.signature)["units"]
            vals["unroll"] = max(d for d in _divisors(math.gcd(units, vals["micro_tile"]))
                                 if d <= DEFAULT_BLOCK_UNITS)
    if "reduction_unroll" in vals and vals.get("form") != FORM_DIRECT \
            and vals["reduction_unroll"] is None:
        vals["reduction_unroll"] = default_reduction_unroll(task, vals.get("form"))
    return LayerSchedule(**vals)


def micro_tiles(task: Task, sched: LayerSchedule) -> int:
    """Yield checks per call of the kernel (iterations of the yield loop)."""
    s = resolve(task, sched)
    ext = task_extent(task.signature)
    if flat_pixels(task.signature, s.form):   # tile_size^2 flat pixels per macro-tile
        per = -(-s.tile_size ** 2 // s.micro_tile ** 2)
        return (-(-ext["rows"] * ext["cols"] // s.tile_size ** 2) * per
                * (ext["channels"] // s.channel_tile))
    if task.type in ("conv2d", "depthwise_conv2d"):
        per = -(-s.tile_size // s.micro_tile)
        return (-(-ext["rows"] // s.tile_size) * -(-ext["cols"] // s.tile_size) * per * per
                * (ext["channels"] // s.channel_tile))
    if task.type == "dense":
        return -(-ext["units"] // s.tile_size) * -(-s.tile_size // s.micro_tile)
    if task.type in ("avg_pool", "max_pool"):
        return -(-ext["rows"] // s.micro_tile) * (ext["channels"] // s.channel_tile)
    return -(-ext["elements"] // s.micro_tile)


def parse_parameters(net: Network, parameters: dict[str, Any] | None,
                     ) -> tuple[dict[str, dict[str, list[int]]], dict[str, dict[str, list[int]]],
                                dict[str, list[Any]], list[Problem]]:
    """Split ``experiment.parameters`` into per-type and per-layer spaces and network-wide
    values; report unknown keys/types/layers."""
    per_type: dict[str, dict[str, list[int]]] = {}
    per_layer: dict[str, dict[str, list[int]]] = {}
    net_wide: dict[str, list[Any]] = {}
    probs: list[Problem] = []
    base = "experiment.parameters"
    if not parameters:
        return per_type, per_layer, net_wide, probs
    if not isinstance(parameters, dict):
        return per_type, per_layer, net_wide, [Problem(base, "must be a mapping")]
    layer_ops = {n: op for op in net.ops for n in op.layer_names}

    def space(fld: str, raw: Any, op_type: str) -> dict[str, list[int]] | None:
        if not isinstance(raw, dict):
            probs.append(Problem(fld, f"{raw!r} must be a mapping of parameter: [values]"))
            return None
        out = {}
        for k, v in raw.items():
            vals = v if isinstance(v, list) else [v]
            if k == "form" and k in SCHEDULE_KEYS[op_type]:
                bad = [x for x in vals if x not in FORMS and x not in FORMS.values()]
                if bad or not vals:
                    probs.append(Problem(f"{fld}.form", f"{v!r}: not a kernel form",
                                         "valid: " + ", ".join(FORMS)))
                else:
                    out[k] = [FORMS.get(x, x) for x in vals]
            elif k not in SCHEDULE_KEYS[op_type]:
                probs.append(Problem(f"{fld}.{k}", f"not a schedule parameter of {op_type}",
                                     f"valid: {', '.join(SCHEDULE_KEYS[op_type])}"))
            elif not vals or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                     for x in vals):
                probs.append(Problem(f"{fld}.{k}", f"{v!r} must be a non-empty list of "
                                                   "positive integers"))
            else:
                out[k] = [int(x) for x in vals]
        return out

    for key, raw in parameters.items():
        if key == "layers":
            if not isinstance(raw, dict):
                probs.append(Problem(f"{base}.layers", "must map layer names to spaces"))
                continue
            for lname, sp in raw.items():
                if lname not in layer_ops:
                    probs.append(Problem(f"{base}.layers.{lname}", "no layer has that name "
                                         "(flatten layers have no kernel)",
                                         f"valid: {', '.join(layer_ops)}"))
                    continue
                got = space(f"{base}.layers.{lname}", sp, layer_ops[lname].type)
                if got is not None:
                    per_layer[layer_ops[lname].name] = got
        elif key in PARAM_TYPES:
            got = space(f"{base}.{key}", raw, PARAM_TYPES[key])
            if got is not None:
                per_type.setdefault(PARAM_TYPES[key], {}).update(got)
        elif key in NETWORK_KEYS:
            net_wide[key] = raw if isinstance(raw, list) else [raw]
        else:
            probs.append(Problem(f"{base}.{key}", "unknown key", "valid: an op type ("
                                 + ", ".join(PARAM_TYPES) + "), layers, "
                                 + ", ".join(NETWORK_KEYS)))
    return per_type, per_layer, net_wide, probs


def task_spaces(net: Network, parameters: dict[str, Any] | None = None
                ) -> tuple[list[Task], dict[str, list[LayerSchedule]], list[Problem]]:
    """Tasks and, per task key, every valid schedule of its space (the per-name space wins
    over the per-type one, which wins over the default). Impossible combinations are dropped;
    a task left with none is a problem naming the layer and field."""
    per_type, per_layer, _net_wide, probs = parse_parameters(net, parameters)
    tasks = extract_tasks(net, frozenset(per_layer))
    spaces: dict[str, list[LayerSchedule]] = {}
    for task in tasks:
        first = net.ops[task.ops[0]]
        sp = per_layer.get(first.name) or per_type.get(task.type) or {}
        keys = [k for k in SCHEDULE_KEYS[task.type] if k in sp]
        combos = itertools.product(*(sp[k] for k in keys)) if keys else [()]
        ok, why = [], []
        for combo in combos:
            sched = LayerSchedule(**dict(zip(keys, combo, strict=True)))
            errs = check_schedule(task, sched)
            if errs:
                why.extend(errs)
            else:
                r = resolve(task, sched)
                if r not in ok:
                    ok.append(r)
        if not ok:
            fld = (f"experiment.parameters.layers.{first.name}" if first.name in per_layer
                   else f"experiment.parameters.{task.type}")
            probs.append(Problem(fld, "no schedule in the space fits: " + "; ".join(
                sorted(set(why))), layer=first.label))
        spaces[task.key] = ok
    return tasks, spaces, probs
