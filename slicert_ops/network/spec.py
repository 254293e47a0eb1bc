"""Network description: layers from ``experiment.model``, shape inference and the checks.

Pure Python (no TVM, no numpy). A network is a list of layers; each layer reads the previous
layer's output unless it names its inputs (``inputs: [name, ...]``; ``input`` is the network
input), so residual branches are written as plain lists::

    model:
      name: tiny
      dtype: int8                 # int8 (TFLite/CMSIS-NN quantisation) | float32
      input: [1, 16, 16, 3]       # NHWC (or [N, features])
      seed: 0                     # seeded weights when only the architecture is given
      layers:
        - {name: c1, type: conv2d, filters: 8, kernel: 3, padding: same, activation: relu}
        - {name: c2, type: conv2d, filters: 8, kernel: 3, padding: same}
        - {name: sum, type: add, inputs: [c1, c2], activation: relu}
        - {type: avg_pool, pool: global}
        - {type: flatten}
        - {type: dense, units: 10}

Layer types (aliases in :data:`ALIASES`): ``conv2d``, ``depthwise_conv2d``, ``dense``,
``avg_pool``, ``max_pool``, ``add``, ``relu``, ``relu6``, ``flatten``; ``softmax`` is recognised
and rejected with an explanation (not implemented in the firmware yet).

Every problem is collected (all at once) as a :class:`Problem` naming the layer, the field and
the fix; :class:`NetworkError` (an ``InputError``, exit status 2) carries them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from slicert_ops.errors import InputError

LAYER_TYPES = ("conv2d", "depthwise_conv2d", "dense", "avg_pool", "max_pool", "add", "relu",
               "relu6", "flatten")
NOT_YET = {"softmax": "softmax is not implemented in the firmware yet (it does not change "
                      "the argmax of the logits): remove the layer"}
ALIASES = {
    "conv": "conv2d", "conv_2d": "conv2d",
    "depthwise": "depthwise_conv2d", "depthwise_conv_2d": "depthwise_conv2d",
    "dwconv2d": "depthwise_conv2d",
    "fully_connected": "dense", "fc": "dense", "linear": "dense",
    "average_pool": "avg_pool", "avg_pool2d": "avg_pool", "average_pool_2d": "avg_pool",
    "avgpool": "avg_pool", "global_avg_pool": "avg_pool", "global_average_pool": "avg_pool",
    "max_pool2d": "max_pool", "max_pool_2d": "max_pool", "maxpool": "max_pool",
    "residual_add": "add", "reshape": "flatten",
}
DTYPES = ("int8", "float32")
ACTIVATIONS = (None, "relu", "relu6")
NETWORK_INPUT = "input"

#: Fields each layer type accepts (besides name, type, inputs).
LAYER_FIELDS: dict[str, tuple[str, ...]] = {
    "conv2d": ("filters", "kernel", "stride", "padding", "activation", "use_bias"),
    "depthwise_conv2d": ("kernel", "stride", "padding", "depth_multiplier", "activation",
                         "use_bias"),
    "dense": ("units", "activation", "use_bias"),
    "avg_pool": ("pool", "stride", "padding"),
    "max_pool": ("pool", "stride", "padding"),
    "add": ("activation",),
    "relu": (),
    "relu6": (),
    "flatten": (),
}
MODEL_FIELDS = ("name", "dtype", "input", "seed", "layers", "onnx", "description")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a network description."""

    field: str          # dotted path, e.g. experiment.model.layers[3].kernel
    message: str
    fix: str = ""
    layer: str | None = None

    def __str__(self) -> str:
        where = f"{self.field}"
        if self.layer:
            where += f" (layer {self.layer!r})"
        text = f"{where}: {self.message}"
        return text + (f" ({self.fix})" if self.fix else "")


class NetworkError(InputError):
    """An invalid network description: every problem at once; nothing was built."""

    def __init__(self, problems: list[Problem], file: str | None = None) -> None:
        self.problems = list(problems)
        text = "; ".join(str(p) for p in problems) if len(problems) == 1 else (
            f"{len(problems)} problems in the network:\n  - "
            + "\n  - ".join(str(p) for p in problems))
        super().__init__(text, file=file)


@dataclass
class Layer:
    """One layer, normalised (kernel/stride as pairs, padding as (top, bottom, left, right)).
    ``in_shapes`` / ``out_shape`` are filled by shape inference."""

    name: str
    type: str
    inputs: tuple[str, ...]
    index: int = 0
    filters: int | None = None
    units: int | None = None
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    padding_spec: Any = 0
    depth_multiplier: int = 1
    activation: str | None = None
    use_bias: bool = True
    pool_global: bool = False
    in_shapes: tuple[tuple[int, ...], ...] = ()
    out_shape: tuple[int, ...] = ()

    @property
    def field(self) -> str:
        return f"experiment.model.layers[{self.index}]"

    def weight_shape(self) -> tuple[int, ...] | None:
        """Weight layout: conv2d HWIO (KH, KW, C, K); depthwise (KH, KW, C*M);
        dense (OUT, IN) as TFLite's FULLY_CONNECTED."""
        if self.type == "conv2d":
            return (*self.kernel, self.in_shapes[0][3], int(self.filters))
        if self.type == "depthwise_conv2d":
            return (*self.kernel, self.in_shapes[0][3] * self.depth_multiplier)
        if self.type == "dense":
            return (int(self.units), self.in_shapes[0][1])
        return None

    @property
    def out_channels(self) -> int:
        return int(self.out_shape[-1])

    @property
    def macs(self) -> int:
        if self.type == "conv2d":
            kh, kw = self.kernel
            return math.prod(self.out_shape) * kh * kw * self.in_shapes[0][3]
        if self.type == "depthwise_conv2d":
            kh, kw = self.kernel
            return math.prod(self.out_shape) * kh * kw
        if self.type == "dense":
            return math.prod(self.out_shape) * self.in_shapes[0][1]
        return 0

    @property
    def params(self) -> int:
        """Weights + biases."""
        ws = self.weight_shape()
        if ws is None:
            return 0
        return math.prod(ws) + (self.out_channels if self.use_bias else 0)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (shapes included)."""
        d: dict[str, Any] = {"name": self.name, "type": self.type, "inputs": list(self.inputs),
                             "in_shapes": [list(s) for s in self.in_shapes],
                             "out_shape": list(self.out_shape)}
        if self.type in ("conv2d", "depthwise_conv2d", "avg_pool", "max_pool"):
            d.update(kernel=list(self.kernel), stride=list(self.stride),
                     padding=list(self.padding))
        if self.type == "conv2d":
            d["filters"] = self.filters
        if self.type == "depthwise_conv2d":
            d["depth_multiplier"] = self.depth_multiplier
        if self.type == "dense":
            d["units"] = self.units
        if self.type in ("conv2d", "depthwise_conv2d", "dense", "add"):
            d["activation"] = self.activation
        if self.type in ("conv2d", "depthwise_conv2d", "dense"):
            d["use_bias"] = self.use_bias
        return d


@dataclass
class NetworkSpec:
    """A checked network architecture (no weights yet)."""

    name: str
    dtype: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    seed: int = 0
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def shape_of(self, tensor: str) -> tuple[int, ...]:
        return self.input_shape if tensor == NETWORK_INPUT else self.layer(tensor).out_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].out_shape

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)


# ------------------------------------------------------------------------------------------
# parsing helpers
# ------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v: Any) -> tuple[int, int] | None:
    if _is_int(v) and v > 0:
        return (v, v)
    if isinstance(v, list | tuple) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v):
        return (int(v[0]), int(v[1]))
    return None


def same_padding(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TFLite SAME: (out, pad_before, pad_after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _conv_out(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
              padding: Any) -> tuple[tuple[int, int], tuple[int, int, int, int]] | str:
    """Output (OH, OW) and pads (top, bottom, left, right), or an error text."""
    kh, kw = kernel
    sh, sw = stride
    if padding == "same":
        oh, pt, pb = same_padding(h, kh, sh)
        ow, pl, pr = same_padding(w, kw, sw)
        return (oh, ow), (pt, pb, pl, pr)
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif _is_int(padding) and padding >= 0:
        pads = (padding,) * 4
    elif (isinstance(padding, list | tuple) and len(padding) == 4
          and all(_is_int(p) and p >= 0 for p in padding)):
        pads = tuple(int(p) for p in padding)
    else:
        return (f"padding {padding!r} is not 'same', 'valid', an integer >= 0 or "
                "[top, bottom, left, right]")
    pt, pb, pl, pr = pads
    if kh > h + pt + pb or kw > w + pl + pr:
        return (f"kernel {kh}x{kw} is larger than the padded input {h + pt + pb}x{w + pl + pr}")
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        return f"padding {list(pads)} must be smaller than the kernel {kh}x{kw}"
    oh = (h + pt + pb - kh) // sh + 1
    ow = (w + pl + pr - kw) // sw + 1
    return (oh, ow), pads  # type: ignore[return-value]


def parse_network(model: dict[str, Any], *, source: str | None = None) -> NetworkSpec:
    """Check ``experiment.model`` (a dict from YAML/JSON) and infer every shape.

    Raises :class:`NetworkError` listing every problem (unknown layer type or field, bad
    value, shape mismatch, unknown input name); nothing is built.
    """
    probs: list[Problem] = []
    base = "experiment.model"

    def bad(fld: str, msg: str, fix: str = "", layer: str | None = None) -> None:
        probs.append(Problem(fld, msg, fix, layer))

    if not isinstance(model, dict):
        raise NetworkError([Problem(base, "must be a mapping with 'input' and 'layers'",
                                    "see docs/networks.md")], source)
    for key in model:
        if key not in MODEL_FIELDS:
            bad(f"{base}.{key}", "unknown field", f"valid: {', '.join(MODEL_FIELDS)}")
    if "onnx" in model:
        bad(f"{base}.onnx", "an ONNX model is read by load_network, not parse_network",
            "call slicert_ops.network.load_network")
    name = model.get("name", "network")
    if not isinstance(name, str) or not name:
        bad(f"{base}.name", f"{name!r} must be a non-empty string")
        name = "network"
    dtype = model.get("dtype", "int8")
    if dtype not in DTYPES:
        bad(f"{base}.dtype", f"{dtype!r} is not supported", f"valid: {', '.join(DTYPES)}")
        dtype = "int8"
    seed = model.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        bad(f"{base}.seed", f"{seed!r} must be an integer >= 0")
        seed = 0
    shape = model.get("input")
    if (not isinstance(shape, list | tuple) or len(shape) not in (2, 4)
            or not all(_is_int(v) and v > 0 for v in shape)):
        bad(f"{base}.input", f"{shape!r} must be [N, H, W, C] or [N, features] "
                             "(positive integers)", "e.g. input: [1, 49, 10, 1]")
        raise NetworkError(probs, source)
    if shape[0] != 1:
        bad(f"{base}.input", f"batch {shape[0]}: only batch 1 is supported",
            f"use input: [1, {', '.join(map(str, shape[1:]))}]")
    raw_layers = model.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        bad(f"{base}.layers", "must be a non-empty list of layers",
            "e.g. - {type: conv2d, filters: 8, kernel: 3}")
        raise NetworkError(probs, source)

    shapes: dict[str, tuple[int, ...]] = {NETWORK_INPUT: tuple(shape)}
    layers: list[Layer] = []
    prev = NETWORK_INPUT
    counts: dict[str, int] = {}
    failed: set[str] = set()
    for i, raw in enumerate(raw_layers):
        fld = f"{base}.layers[{i}]"
        if not isinstance(raw, dict):
            bad(fld, f"{raw!r} must be a mapping with a 'type'")
            continue
        ltype = raw.get("type")
        ltype = ALIASES.get(ltype, ltype) if isinstance(ltype, str) else ltype
        lname = raw.get("name")
        if ltype in NOT_YET or ltype not in LAYER_TYPES:
            if ltype in NOT_YET:
                bad(f"{fld}.type", NOT_YET[ltype], layer=lname)
            else:
                bad(f"{fld}.type", f"unknown layer type {raw.get('type')!r}",
                    f"valid: {', '.join(LAYER_TYPES)}", lname)
            lname = lname if isinstance(lname, str) else f"layers[{i}]"
            failed.add(lname)
            prev = lname
            continue
        counts[ltype] = counts.get(ltype, 0) + 1
        if lname is None:
            lname = f"{ltype}_{counts[ltype]}"
        if not isinstance(lname, str) or not lname.replace("_", "").isalnum():
            bad(f"{fld}.name", f"{lname!r} must be letters, digits and '_'", layer=None)
            lname = f"{ltype}_{counts[ltype]}"
        if lname in shapes:
            bad(f"{fld}.name", f"{lname!r} is used twice" if lname != NETWORK_INPUT else
                "'input' is the network input", "give every layer its own name", lname)
        allowed = LAYER_FIELDS[ltype]
        for key in raw:
            if key not in ("name", "type", "inputs", *allowed):
                bad(f"{fld}.{key}", f"unknown field for a {ltype} layer",
                    f"valid: {', '.join(('name', 'type', 'inputs', *allowed))}", lname)
        inputs = raw.get("inputs", [prev] if ltype != "add" else None)
        if isinstance(inputs, str):
            inputs = [inputs]
        need = 2 if ltype == "add" else 1
        if (not isinstance(inputs, list | tuple) or len(inputs) != need
                or not all(isinstance(x, str) for x in inputs)):
            bad(f"{fld}.inputs", f"{inputs!r}: a {ltype} layer takes {need} input(s)",
                "add: inputs: [skip_layer, other_layer]" if ltype == "add" else
                "name an earlier layer, or leave it out to use the previous layer", lname)
            failed.add(lname)
            prev = lname
            continue
        if any(x in failed for x in inputs):  # its input is already reported
            failed.add(lname)
            prev = lname
            continue
        missing = [x for x in inputs if x not in shapes]
        if missing:
            bad(f"{fld}.inputs", f"{', '.join(missing)}: no earlier layer has that name",
                f"valid: {', '.join(shapes)}", lname)
            failed.add(lname)
            prev = lname
            continue
        layer = Layer(name=lname, type=ltype, inputs=tuple(inputs), index=i)
        layer.in_shapes = tuple(shapes[x] for x in inputs)
        err_count = len(probs)
        _infer(layer, raw, fld, bad)
        if len(probs) == err_count and layer.out_shape:
            shapes[lname] = layer.out_shape
            layers.append(layer)
        else:
            failed.add(lname)
        prev = lname
    if probs:
        raise NetworkError(probs, source)
    return NetworkSpec(name=name, dtype=dtype, input_shape=tuple(shape), layers=layers,
                       seed=int(seed), source=source)


def _positive(raw: dict[str, Any], key: str, what: str, fix: str, fld: str, name: str,
              bad: Any) -> int | None:
    """``raw[key]`` when it is a positive integer; else reports it and returns None."""
    v = raw.get(key)
    if not _is_int(v) or v <= 0:
        bad(f"{fld}.{key}", f"{v!r} must be a positive integer ({what})", fix, name)
        return None
    return int(v)


def _infer(layer: Layer, raw: dict[str, Any], fld: str, bad) -> None:
    """Fill the layer's parameters and output shape, or report problems via ``bad``."""
    t, name = layer.type, layer.name
    ish = layer.in_shapes[0]

    def need_rank(rank: int, fix: str) -> bool:
        if len(ish) != rank:
            what = "[N, H, W, C]" if rank == 4 else "[N, features]"
            bad(f"{fld}.inputs", f"a {t} layer needs a {what} input, got shape {list(ish)}",
                fix, name)
            return False
        return True

    act = raw.get("activation")
    if act in ("none", "linear"):
        act = None
    if t in ("conv2d", "depthwise_conv2d", "dense", "add"):
        if act not in ACTIVATIONS:
            bad(f"{fld}.activation", f"{act!r} is not supported", "valid: relu, relu6, none",
                name)
            return
        layer.activation = act
    ub = raw.get("use_bias", True)
    if not isinstance(ub, bool):
        bad(f"{fld}.use_bias", f"{ub!r} must be true or false", layer=name)
        return
    layer.use_bias = ub

    if t in ("conv2d", "depthwise_conv2d", "avg_pool", "max_pool"):
        if not need_rank(4, "put it before the flatten, or give an [N, H, W, C] input"):
            return
        _, h, w, c = ish
        if t in ("avg_pool", "max_pool"):
            pool = raw.get("pool")
            if pool == "global":
                layer.pool_global = True
                kernel = (h, w)
            else:
                kernel = _pair(pool)
                if kernel is None:
                    bad(f"{fld}.pool", f"{pool!r} must be a positive integer, [PH, PW] or "
                                       "'global'", "e.g. pool: [2, 2]", name)
                    return
        else:
            kernel = _pair(raw.get("kernel"))
            if kernel is None:
                bad(f"{fld}.kernel", f"{raw.get('kernel')!r} must be a positive integer or "
                                     "[KH, KW]", "e.g. kernel: 3", name)
                return
        stride_raw = raw.get("stride", kernel if t in ("avg_pool", "max_pool") else 1)
        stride = _pair(stride_raw)
        if stride is None:
            bad(f"{fld}.stride", f"{stride_raw!r} must be a positive integer or [SH, SW]",
                layer=name)
            return
        padding = raw.get("padding", "valid" if t in ("avg_pool", "max_pool") else 0)
        res = _conv_out(h, w, kernel, stride, padding)
        if isinstance(res, str):
            fix = (f"the input is {h}x{w}: use a smaller kernel or padding: same"
                   if "larger" in res else "valid: same, valid, an integer, [t, b, l, r]")
            bad(f"{fld}.padding" if "padding" in res else f"{fld}.kernel", res, fix, name)
            return
        (oh, ow), pads = res
        layer.kernel, layer.stride, layer.padding, layer.padding_spec = \
            kernel, stride, pads, padding
        if t == "conv2d":
            f = _positive(raw, "filters", "output channels", "e.g. filters: 16", fld, name, bad)
            if f is None:
                return
            layer.filters = f
            layer.out_shape = (1, oh, ow, f)
        elif t == "depthwise_conv2d":
            m = raw.get("depth_multiplier", 1)
            if not _is_int(m) or m <= 0:
                bad(f"{fld}.depth_multiplier", f"{m!r} must be a positive integer", layer=name)
                return
            layer.depth_multiplier = m
            layer.out_shape = (1, oh, ow, c * m)
        else:
            layer.out_shape = (1, oh, ow, c)
    elif t == "dense":
        if not need_rank(2, "add - {type: flatten} before the dense layer"):
            return
        u = _positive(raw, "units", "output features", "e.g. units: 10", fld, name, bad)
        if u is None:
            return
        layer.units = u
        layer.out_shape = (ish[0], u)
    elif t == "add":
        a, b = layer.in_shapes
        if a != b:
            bad(f"{fld}.inputs", f"shape mismatch: {layer.inputs[0]} is {list(a)} but "
                                 f"{layer.inputs[1]} is {list(b)}",
                "residual add needs equal shapes: match filters/stride/padding of the "
                "branch, or add a 1x1 conv2d projection on the skip path", name)
            return
        layer.out_shape = a
    elif t in ("relu", "relu6"):
        layer.out_shape = ish
    elif t == "flatten":
        layer.out_shape = (ish[0], math.prod(ish[1:]))
