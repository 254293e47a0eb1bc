"""Value types of the code-generation stage, and the checks on them.

Pure Python (no TVM import): the manifest validator and the cost model use these without paying
for TVM. Shapes are tuples of ints; ``to_dict`` gives JSON-able dicts (lists) in a fixed order.

Layouts
-------
- conv2d: data NHWC ``(N, H, W, C)``, weights HWIO ``(KH, KW, C, K)``, output NHWC
  ``(N, OH, OW, K)`` with ``OH = (H + 2*padding - KH) // stride + 1`` (same for OW).
- dense: data ``(N, IN)``, weights ``(IN, OUT)``, output ``(N, OUT)``.
- int8 inputs accumulate (and output) in int32; float32 stays float32.

Tiling (the one kernel generator, ``network/kernels.py`` and ``network/blocked.py``)
-----------------------------------------------------------------------------------
- conv2d: output rows and columns are split by ``tile_size`` (a macro-tile is
  ``tile_size x tile_size`` output pixels, all output channels), each macro-tile by
  ``micro_tile`` (a micro-tile is ``micro_tile x micro_tile`` output pixels x all output
  channels: the preemption granule). ``unroll`` splits the output channels: ``unroll``
  accumulators are computed together in the innermost, fully unrolled loop (one input load
  feeds ``unroll`` multiply-accumulates).
- dense: output units are split by ``tile_size`` then ``micro_tile`` (a micro-tile is
  ``micro_tile`` output units of one batch row, whole reduction); ``unroll`` splits the
  reduction (``unroll`` multiply-accumulates per iteration of the unrolled body).
- ``micro_tile`` must divide ``tile_size`` (a micro-tile never straddles two macro-tiles);
  ``tile_size`` need not divide the output extent: TVM guards the partial macro-tiles.
  Every iteration of the micro-tile loop calls the yield check once, even a guarded
  micro-tile that holds no output, so ``micro_tiles`` counts loop iterations
  (``tile_counts(...)["nonempty_micro_tiles"]`` counts the ones holding output).

Kernel forms (``form``; the network layers' forms, ``network/tasks.py``)
------------------------------------------------------------------------
A single operator is a task of the network kernel generator whose output is its accumulators
(:func:`operator_task`). ``form`` None or 0 is the direct loop nest above; 1 (block), 2
(im2col, conv2d), 3 (pointwise: a 1x1 stride-1 unpadded conv2d over the flat pixels) and 4
(simd, int8: four MACs per ``slicert_nn_dot4`` step, SMLAD on the Cortex-M4) are the
register-blocked forms: ``pixel_block`` output pixels x ``unroll`` output channels
(dense: ``unroll`` units) of accumulators per register block, weights packed at build time
(:meth:`KernelSource.kernel_inputs`), the innermost reduction loop unrolled by
``reduction_unroll``. The granule is the same in every form: ``micro_tile`` x ``micro_tile``
output pixels x all channels (dense: ``micro_tile`` units) per yield check; the pointwise
form's tiles are ``tile_size``^2 and ``micro_tile``^2 consecutive flat pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from slicert_ops.network.tasks import (
    ACCUMULATOR,
    FORM_DIRECT,
    FORMS,
    LayerSchedule,
    Task,
    default_pixel_block,
    flat_pixels,
)
from slicert_ops.network.tasks import check_schedule as check_task_schedule
from slicert_ops.network.tasks import default_form as default_task_form
from slicert_ops.network.tasks import resolve as resolve_task

OP_TYPES = ("conv2d", "dense")
DTYPES = ("int8", "float32")
ITEMSIZE = {"int8": 1, "int32": 4, "float32": 4}
CTYPE = {"int8": "int8_t", "int32": "int32_t", "float32": "float"}
# TVM turns a temporary below this size into a C stack array, a larger one into a call to the
# TVM runtime (TVMBackendAllocWorkspace), which the MCU kernel must not have.
MAX_ACC_BYTES = 1024


def _as_shape(value: Any) -> Any:
    """Lists (from YAML/JSON) become tuples so that specs are hashable; other values pass
    (``check_operator`` reports bad ones)."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class OperatorSpec:
    """One operator instance. conv2d uses input/kernel/out_channels/stride/padding; dense
    uses input/units. Invalid values are reported by :func:`check_operator`, not raised."""

    type: str
    dtype: str
    input: tuple[int, ...]
    kernel: tuple[int, int] | None = None
    out_channels: int | None = None
    stride: int = 1
    padding: int = 0
    units: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _as_shape(self.input))
        if self.kernel is not None:
            object.__setattr__(self, "kernel", _as_shape(self.kernel))

    # -- derived shapes -------------------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.type == "conv2d":
            n, h, w, _c = self.input
            kh, kw = self.kernel
            oh = (h + 2 * self.padding - kh) // self.stride + 1
            ow = (w + 2 * self.padding - kw) // self.stride + 1
            return (n, oh, ow, int(self.out_channels))
        if self.type == "dense":
            return (self.input[0], int(self.units))
        raise ValueError(f"unknown operator type {self.type!r}")

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.type == "conv2d":
            return (self.kernel[0], self.kernel[1], self.input[3], int(self.out_channels))
        return (self.input[1], int(self.units))

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(data shape, weight shape)."""
        return (tuple(self.input), self.weight_shape)

    @property
    def output_dtype(self) -> str:
        return "int32" if self.dtype == "int8" else "float32"

    @property
    def reduction_size(self) -> int:
        """Multiply-accumulates per output element."""
        if self.type == "conv2d":
            return self.kernel[0] * self.kernel[1] * self.input[3]
        return self.input[1]

    @property
    def macs(self) -> int:
        return math.prod(self.output_shape) * self.reduction_size

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "dtype": self.dtype, "input": list(self.input)}
        if self.type == "conv2d":
            d.update(kernel=list(self.kernel) if self.kernel is not None else None,
                     out_channels=self.out_channels, stride=self.stride, padding=self.padding)
        else:
            d["units"] = self.units
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatorSpec:
        return cls(**d)


@dataclass(frozen=True)
class ScheduleParams:
    """Schedule parameters of one candidate. ``micro_tile=None`` means
    :func:`default_micro_tile`; ``slice`` (slice budget, µs of virtual time) is recorded but
    does not change the code. ``form`` (None: direct), ``pixel_block`` and
    ``reduction_unroll`` choose the kernel form (module docstring); None is left out of
    :meth:`to_dict`, so the ids of direct-form candidates keep their four keys."""

    tile_size: int
    micro_tile: int | None = None
    unroll: int = 1
    slice: float | None = None
    form: int | None = None
    pixel_block: int | None = None
    reduction_unroll: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tile_size": self.tile_size, "micro_tile": self.micro_tile,
                             "unroll": self.unroll, "slice": self.slice}
        for k in ("form", "pixel_block", "reduction_unroll"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScheduleParams:
        return cls(**d)

    @property
    def blocked(self) -> bool:
        """A register-blocked form (block, im2col, pointwise, simd)."""
        return self.form not in (None, FORM_DIRECT)

    def resolved(self, op: OperatorSpec) -> ScheduleParams:
        """A copy with ``micro_tile`` filled in by the default rule when it is None, and a
        blocked form's ``pixel_block`` / ``reduction_unroll`` by the generator's defaults."""
        s = self
        if s.micro_tile is None:
            s = replace(s, micro_tile=default_micro_tile(op, s.tile_size))
        if s.blocked and (s.pixel_block is None and op.type == "conv2d"
                          or s.reduction_unroll is None):
            r = resolve_task(operator_task(op), layer_schedule(op, s))
            s = replace(s, pixel_block=r.pixel_block, reduction_unroll=r.reduction_unroll)
        return s


@dataclass(frozen=True)
class KernelSource:
    """Generated kernel (contract: docs/contracts.md "Kernel")."""

    c_source: str
    entry: str
    args: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, ctype, shape), call order
    micro_tiles: int
    macro_tiles: int
    tvm_config: dict[str, Any] = field(default_factory=dict)
    # a blocked form reads its weights packed: {"type", "unroll"[, "form"]} of
    # network.packing ("form" only for the simd form's layout), or None
    pack: dict[str, Any] | None = None

    @property
    def prototype(self) -> str:
        params = ", ".join(f"{ctype}* {name}" for name, ctype, _ in self.args)
        return f"void {self.entry}({params});"

    def kernel_inputs(self, inputs: Any) -> list[Any]:
        """The operator's inputs ``[data, weight]`` in the layout the kernel reads (a
        blocked form: the weights packed at build time; they are constants)."""
        if self.pack is None:
            return list(inputs)
        from slicert_ops.network.packing import pack_arrays

        data, weight = inputs
        if self.pack["type"] == "dense":   # an operator's (IN, OUT) -> a layer's (OUT, IN)
            weight = weight.T
        packed = pack_arrays(self.pack["type"], {"weight": weight}, {}, int(self.pack["unroll"]),
                             quantised=False, form=self.pack.get("form"))
        return [data, packed["weight"]]


def default_micro_tile(op: OperatorSpec, tile_size: int) -> int:
    """The micro-tile used when a schedule gives none: the largest divisor of ``tile_size``
    (a micro-tile never straddles two macro-tiles) that is at most

    - conv2d: 4 output pixels per side, i.e. ``min(4, tile_size)`` whenever that divides
      (tile 8 -> 4, 16 -> 4, 6 -> 3, 10 -> 2, 5 -> 1). A 4x4 micro-tile x all output channels
      is 16*K*KH*KW*C MACs (9600 for the default 5x5x3 -> 8 conv);
    - dense: ``max(1, 1024 // IN)`` output units, so one micro-tile is ~1024 MACs or less
      (IN = 256: 4 units).
    """
    tile_size = max(1, int(tile_size))
    if op.type == "dense":
        n_in = int(op.input[1]) if len(op.input) == 2 and int(op.input[1]) > 0 else 1
        cap = max(1, 1024 // n_in)
    else:
        cap = 4
    return max(d for d in _divisors(tile_size) if d <= cap)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def check_operator(op: OperatorSpec) -> list[str]:
    """Reasons the operator itself is invalid (empty list = fine)."""
    errs: list[str] = []
    if op.type not in OP_TYPES:
        return [f"type: {op.type!r} is not supported (valid: {', '.join(OP_TYPES)})"]
    if op.dtype not in DTYPES:
        errs.append(f"dtype: {op.dtype!r} is not supported (valid: {', '.join(DTYPES)})")
    rank = 4 if op.type == "conv2d" else 2
    names = "[N, H, W, C]" if op.type == "conv2d" else "[N, IN]"
    if (not isinstance(op.input, tuple) or len(op.input) != rank
            or not all(_is_pos_int(v) for v in op.input)):
        errs.append(f"input: {op.input!r} must be {rank} positive integers {names}")
        return errs
    if op.type == "conv2d":
        if (not isinstance(op.kernel, tuple) or len(op.kernel) != 2
                or not all(_is_pos_int(v) for v in op.kernel)):
            errs.append(f"kernel: {op.kernel!r} must be 2 positive integers [KH, KW]")
        if not _is_pos_int(op.out_channels):
            errs.append(f"out_channels: {op.out_channels!r} must be a positive integer")
        if not _is_pos_int(op.stride):
            errs.append(f"stride: {op.stride!r} must be a positive integer")
        if not isinstance(op.padding, int) or isinstance(op.padding, bool) or op.padding < 0:
            errs.append(f"padding: {op.padding!r} must be an integer >= 0")
        if errs:
            return errs
        _, h, w, _ = op.input
        kh, kw = op.kernel
        if kh > h + 2 * op.padding or kw > w + 2 * op.padding:
            errs.append(f"kernel: {list(op.kernel)} is larger than the padded input "
                        f"{h + 2 * op.padding}x{w + 2 * op.padding} (valid: KH <= H+2*padding, "
                        f"KW <= W+2*padding)")
    else:
        if not _is_pos_int(op.units):
            errs.append(f"units: {op.units!r} must be a positive integer")
    return errs


def tiled_extents(op: OperatorSpec) -> dict[str, int]:
    """The output extents the schedule tiles, by name (conv2d: rows, cols; dense: units)."""
    if op.type == "conv2d":
        _, oh, ow, _ = op.output_shape
        return {"output height": oh, "output width": ow}
    return {"units": op.output_shape[1]}


def unroll_extent(op: OperatorSpec) -> tuple[str, int]:
    """(name, extent) of the loop that ``unroll`` splits."""
    if op.type == "conv2d":
        return "out_channels", int(op.out_channels)
    return "input features (reduction)", int(op.input[1])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_schedule(op: OperatorSpec, sched: ScheduleParams) -> list[str]:
    """Human-readable reasons the schedule is impossible for the operator (empty = fine).

    Every message starts with the field name and gives the valid range.
    """
    errs = check_operator(op)
    if errs:
        return errs
    ext = tiled_extents(op)
    max_tile = min(ext.values())
    limit_text = " and ".join(f"{k} {v}" for k, v in ext.items())
    t = sched.tile_size
    if not _is_pos_int(t):
        errs.append(f"tile_size: {t!r} must be a positive integer (valid range 1..{max_tile})")
    elif t > max_tile:
        errs.append(f"tile_size: {t} is larger than the tiled output extent ({limit_text}); "
                    f"valid range 1..{max_tile}")
    m = sched.micro_tile
    t_ok = _is_pos_int(t) and t <= max_tile
    if m is not None:
        upper = t if t_ok else max_tile
        if not _is_pos_int(m):
            errs.append(f"micro_tile: {m!r} must be a positive integer "
                        f"(valid range 1..tile_size={upper})")
        elif t_ok and m > t:
            errs.append(f"micro_tile: {m} is larger than tile_size {t} "
                        f"(valid: divisors of {t}: {', '.join(map(str, _divisors(t)))})")
        elif t_ok and t % m:
            errs.append(f"micro_tile: {m} does not divide tile_size {t}; a micro-tile must not "
                        f"straddle two macro-tiles (valid: {', '.join(map(str, _divisors(t)))})")
    f = sched.form
    if f is not None and (isinstance(f, bool) or f not in FORMS.values()):
        errs.append(f"form: {f!r} is not a kernel form (valid: "
                    + ", ".join(f"{n} ({i})" for n, i in FORMS.items()) + ")")
        return errs
    if sched.blocked:
        return errs + _check_blocked(op, sched, t_ok and not errs)
    for name in ("pixel_block", "reduction_unroll"):
        if getattr(sched, name) is not None:
            errs.append(f"{name}: a parameter of the blocked forms (form: block, im2col, "
                        "pointwise); the direct form has none")
    u = sched.unroll
    uname, uext = unroll_extent(op)
    divs = _divisors(uext)
    shown = ", ".join(map(str, divs)) if len(divs) <= 16 else f"divisors of {uext}"
    if not _is_pos_int(u):
        errs.append(f"unroll: {u!r} must be a positive integer dividing {uname} {uext} "
                    f"(valid: {shown})")
    elif u > uext:
        errs.append(f"unroll: {u} is larger than the loop it unrolls ({uname} = {uext}); "
                    f"valid: {shown}")
    elif uext % u:
        errs.append(f"unroll: {u} does not divide the loop it unrolls ({uname} = {uext}); "
                    f"valid: {shown}")
    elif op.type == "conv2d" and u * ITEMSIZE[op.output_dtype] >= MAX_ACC_BYTES:
        errs.append(f"unroll: {u} accumulators need {u * ITEMSIZE[op.output_dtype]} bytes; "
                    f"they must stay below {MAX_ACC_BYTES} bytes (a C stack array: larger ones "
                    f"would need a TVM workspace): valid: divisors of {uext} up to "
                    f"{(MAX_ACC_BYTES - 1) // ITEMSIZE[op.output_dtype]}")
    s = sched.slice
    if s is not None and (isinstance(s, bool) or not isinstance(s, int | float) or s <= 0):
        errs.append(f"slice: {s!r} must be a positive number of microseconds")
    return errs


def _check_blocked(op: OperatorSpec, sched: ScheduleParams, tiles_ok: bool) -> list[str]:
    """A blocked form's checks: the generator's (``network.tasks.check_schedule``) on the
    operator's task, once the tiling itself is valid."""
    errs = []
    if not _is_pos_int(sched.unroll):
        errs.append(f"unroll: {sched.unroll!r} must be a positive integer")
    s = sched.slice
    if s is not None and (isinstance(s, bool) or not isinstance(s, int | float) or s <= 0):
        errs.append(f"slice: {s!r} must be a positive number of microseconds")
    if errs or not tiles_ok:
        return errs
    return check_task_schedule(operator_task(op), layer_schedule(op, sched))


def tile_counts(op: OperatorSpec, sched: ScheduleParams) -> dict[str, int]:
    """Loop extents of the tiled schedule and the tile counts, computed from the shapes.

    ``micro_tiles`` = iterations of the micro-tile loop = yield checks per kernel call.
    """
    sched = sched.resolved(op)
    t, m = sched.tile_size, sched.micro_tile
    n = op.input[0]
    if op.type == "conv2d" and flat_pixels(operator_task(op).signature, sched.form):
        # flat pixels: macro-tiles of tile_size^2, micro-tiles of micro_tile^2 pixels
        _, oh, ow, _k = op.output_shape
        pixels, tp, mp = oh * ow, t * t, m * m
        mac = -(-pixels // tp)
        mic = -(-tp // mp)
        return {"macro_tiles": n * mac, "micro_tiles": n * mac * mic,
                "macro_tiles_y": n, "macro_tiles_x": mac,
                "micro_per_macro_side": mic, "micro_per_macro": mic,
                "nonempty_micro_tiles": n * _nonempty(pixels, tp, mp)}
    if op.type == "conv2d":
        _, oh, ow, _k = op.output_shape
        mac_y, mac_x = -(-oh // t), -(-ow // t)
        mic = -(-t // m)
        macro = n * mac_y * mac_x
        return {"macro_tiles": macro, "micro_tiles": macro * mic * mic,
                "macro_tiles_y": mac_y, "macro_tiles_x": mac_x,
                "micro_per_macro_side": mic, "micro_per_macro": mic * mic,
                "nonempty_micro_tiles": n * _nonempty(oh, t, m) * _nonempty(ow, t, m)}
    units = op.output_shape[1]
    mac = -(-units // t)
    mic = -(-t // m)
    return {"macro_tiles": n * mac, "micro_tiles": n * mac * mic,
            "macro_tiles_y": n, "macro_tiles_x": mac,
            "micro_per_macro_side": mic, "micro_per_macro": mic,
            "nonempty_micro_tiles": n * _nonempty(units, t, m)}


def _nonempty(extent: int, t: int, m: int) -> int:
    """Micro-tiles along one axis that hold at least one output element."""
    count = 0
    for start in range(0, extent, t):
        count += -(-min(t, extent - start) // m)
    return count


def footprint(op: OperatorSpec) -> dict[str, int]:
    """Data bytes on the board: inputs + weights are const (flash), the output is in RAM."""
    data_shape, w_shape = op.input_shapes
    isz = ITEMSIZE[op.dtype]
    return {"flash_data_bytes": (math.prod(data_shape) + math.prod(w_shape)) * isz,
            "ram_data_bytes": math.prod(op.output_shape) * ITEMSIZE[op.output_dtype]}


# --------------------------------------------------------------------------------------------
# A single operator as a task of the one kernel generator (network/kernels.py)
# --------------------------------------------------------------------------------------------
def operator_signature(op: OperatorSpec) -> dict[str, Any]:
    """The generator's task signature of an operator (``network.tasks.op_signature``'s
    keys), writing its accumulators (:data:`ACCUMULATOR`)."""
    sig: dict[str, Any] = {"type": op.type, "dtype": op.dtype, "in_shapes": [list(op.input)],
                           "out_shape": list(op.output_shape)}
    if op.type == "conv2d":
        st, p = int(op.stride), int(op.padding)
        sig.update(kernel=list(op.kernel), stride=[st, st], padding=[p, p, p, p])
    sig["output"] = ACCUMULATOR
    return sig


def operator_task(op: OperatorSpec) -> Task:
    sig = operator_signature(op)
    key = hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]
    return Task(key, op.type, op.dtype, sig, ops=[0], layer_names=[op.type], macs=op.macs)


def layer_schedule(op: OperatorSpec, sched: ScheduleParams) -> LayerSchedule:
    """The generator's schedule of an operator's: a conv2d granule holds all output
    channels (``channel_tile``); the direct form is form 0."""
    micro = sched.micro_tile or default_micro_tile(op, sched.tile_size)
    conv = op.type == "conv2d"
    return LayerSchedule(tile_size=sched.tile_size, micro_tile=micro, unroll=sched.unroll,
                         channel_tile=int(op.out_channels) if conv else None,
                         form=sched.form if sched.blocked else FORM_DIRECT,
                         pixel_block=sched.pixel_block if conv and sched.blocked else None,
                         reduction_unroll=sched.reduction_unroll if sched.blocked else None)


def default_form(op: OperatorSpec, sched: ScheduleParams) -> int:
    """The form a schedule gets when the manifest names none: the generator's default for
    the operator (pointwise for a 1x1 stride-1 unpadded conv2d, im2col for a padded conv2d
    whose patch fits a stack array, else block), or direct where that form cannot take the
    schedule's other parameters (e.g. a dense ``unroll`` that is no register block; not when
    the schedule names a blocked form's ``pixel_block`` or ``reduction_unroll``)."""
    micro = sched.micro_tile or default_micro_tile(op, sched.tile_size)
    form = default_task_form(operator_task(op), sched.pixel_block or default_pixel_block(micro))
    given = sched.pixel_block is not None or sched.reduction_unroll is not None
    if not given and check_schedule(op, replace(sched, form=form)):
        return FORM_DIRECT
    return form
