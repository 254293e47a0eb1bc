"""A network with weights: executed ops (activations fused), tensors, quantisation.

``make_network(spec)`` turns a checked :class:`~.spec.NetworkSpec` into a :class:`Network`:

1. **Ops.** Every layer becomes an op, except ``flatten`` (a no-op on NHWC data: its output is
   its input tensor) and a ``relu``/``relu6`` that directly follows a conv2d, depthwise, dense
   or add whose output nobody else reads: it is fused into that op's activation clamp, as the
   TFLite converter does. A relu that cannot be fused becomes a clamp op.
2. **Float weights** from a seeded generator (He-normal weights, small biases): the same
   ``seed`` gives the same network on every machine.
3. **int8** (TFLite/CMSIS-NN): a calibration input (seed + 1) is run through the float network;
   each tensor gets per-tensor scale/zero point from its range (pooling, flatten and relu keep
   their input's parameters, as TFLite requires); weights are quantised per output channel,
   biases to int32, requantisation to (multiplier, shift) per channel.

Each :class:`Op` carries everything its kernel needs: ``arrays`` (weight, bias, mult, shift:
const data in flash) and ``scalars`` (zero points, clamps, add multipliers: kernel arguments),
so layers with equal shapes share one generated kernel.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import quant
from . import reference as ref
from .spec import NETWORK_INPUT, Layer, NetworkSpec

FUSIBLE = ("conv2d", "depthwise_conv2d", "dense", "add")
F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 1.0
    zero_point: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (1 if self.dtype == "int8" else 4)


@dataclass
class Op:
    """One executed kernel (a layer, with a fused activation if any)."""

    index: int
    name: str                     # the layer's name
    type: str                     # conv2d | depthwise_conv2d | dense | avg_pool | max_pool
    #                               | add | clamp
    layer: Layer
    inputs: tuple[str, ...]       # tensor names (NETWORK_INPUT = the network input)
    output: str                   # tensor name (= name)
    activation: str | None = None
    fused: tuple[str, ...] = ()   # names of the layers folded into this op
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "+".join((self.name, *self.fused))

    @property
    def layer_names(self) -> tuple[str, ...]:
        return (self.name, *self.fused)


@dataclass
class Network:
    spec: NetworkSpec
    ops: list[Op]
    tensors: dict[str, TensorInfo]
    aliases: dict[str, str]       # layer name -> tensor holding its output
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # const input tensors (flash)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dtype(self) -> str:
        return self.spec.dtype

    @property
    def input(self) -> TensorInfo:
        return self.tensors[NETWORK_INPUT]

    @property
    def output(self) -> TensorInfo:
        return self.tensors[self.ops[-1].output]

    def tensor_of(self, layer_name: str) -> TensorInfo:
        return self.tensors[self.aliases.get(layer_name, layer_name)]

    @property
    def macs(self) -> int:
        return self.spec.macs

    @property
    def params(self) -> int:
        return self.spec.params

    @property
    def weight_bytes(self) -> int:
        """Const data in flash: weights, biases, multipliers and shifts."""
        return sum(a.nbytes for op in self.ops for a in op.arrays.values())

    def make_input(self, seed: int | None = None) -> np.ndarray:
        """A deterministic test input (int8: a quantised float input in [-1, 1))."""
        s = self.spec.seed + 2 if seed is None else seed
        x = np.random.default_rng(s).uniform(-1.0, 1.0, size=self.input.shape)
        if self.dtype == "float32":
            return x.astype(np.float32)
        return quant.quantize_tensor(x, self.input.scale, self.input.zero_point)

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the architecture, quantisation and weights."""
        h = hashlib.sha256()
        h.update(json.dumps([op.layer.describe() for op in self.ops], sort_keys=True).encode())
        for op in self.ops:
            h.update(json.dumps(op.scalars, sort_keys=True, default=float).encode())
            for k in sorted(op.arrays):
                h.update(k.encode() + op.arrays[k].tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "input": list(self.input.shape),
                "output": list(self.output.shape), "layers": len(self.spec.layers),
                "ops": len(self.ops), "macs": self.macs, "params": self.params,
                "weight_bytes": self.weight_bytes}


# ------------------------------------------------------------------------------------------
# ops (fusion)
# ------------------------------------------------------------------------------------------
def _consumers(spec: NetworkSpec) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for layer in spec.layers:
        for x in layer.inputs:
            out.setdefault(x, []).append(layer.name)
    return out


def build_ops(spec: NetworkSpec) -> tuple[list[Op], dict[str, str]]:
    """Ops in execution order and the alias map (layer name -> tensor name)."""
    consumers = _consumers(spec)
    aliases: dict[str, str] = {NETWORK_INPUT: NETWORK_INPUT}
    ops: list[Op] = []
    by_tensor: dict[str, Op] = {}
    for layer in spec.layers:
        ins = tuple(aliases[x] for x in layer.inputs)
        if layer.type == "flatten":
            aliases[layer.name] = ins[0]
            continue
        if layer.type in ("relu", "relu6"):
            src = layer.inputs[0]
            prod = by_tensor.get(aliases[src])
            if (prod is not None and prod.type in FUSIBLE and prod.activation is None
                    and len(consumers.get(src, [])) == 1 and prod is ops[-1]
                    and aliases[src] == prod.output):
                prod.activation = layer.type
                prod.fused = (*prod.fused, layer.name)
                aliases[layer.name] = prod.output
                continue
            op = Op(len(ops), layer.name, "clamp", layer, ins, layer.name,
                    activation=layer.type)
        else:
            op = Op(len(ops), layer.name, layer.type, layer, ins, layer.name,
                    activation=layer.activation)
        ops.append(op)
        by_tensor[op.output] = op
        aliases[layer.name] = op.output
    if not ops:
        raise ValueError("the network has no computing layer (only flatten)")
    return ops, aliases


# ------------------------------------------------------------------------------------------
# seeded float weights
# ------------------------------------------------------------------------------------------
def _float_weights(op: Op, seed: int) -> dict[str, np.ndarray]:
    layer = op.layer
    ws = layer.weight_shape()
    if ws is None:
        return {}
    digest = hashlib.sha256(f"{seed}:{op.name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    if layer.type == "conv2d":
        fan_in = ws[0] * ws[1] * ws[2]
    elif layer.type == "depthwise_conv2d":
        fan_in = ws[0] * ws[1]
    else:
        fan_in = ws[1]
    w = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=ws).astype(np.float32)
    k = layer.out_channels
    b = (rng.normal(0.0, 0.05, size=k) if layer.use_bias else np.zeros(k)).astype(np.float32)
    return {"weight": w, "bias": b}


def act_bounds_f(activation: str | None) -> tuple[float, float]:
    if activation == "relu":
        return 0.0, F32_MAX
    if activation == "relu6":
        return 0.0, 6.0
    return -F32_MAX, F32_MAX


def run_op(op: Op, inputs: list[np.ndarray], dtype: str) -> np.ndarray:
    """The reference output of one op (int8: TFLite integer semantics; float32)."""
    layer, s = op.layer, op.scalars
    t = op.type
    if t in ("conv2d", "depthwise_conv2d", "avg_pool", "max_pool"):
        geo = {"stride": layer.stride, "pads": layer.padding,
               "out_hw": tuple(layer.out_shape[1:3])}
    if dtype == "int8":
        if t in ("conv2d", "depthwise_conv2d"):
            a = op.arrays
            return ref.conv2d_int8(inputs[0], a["weight"], a["bias"], a["mult"], a["shift"],
                                   in_zp=s["in_zp"], out_zp=s["out_zp"],
                                   act_min=s["act_min"], act_max=s["act_max"],
                                   depthwise=t == "depthwise_conv2d",
                                   depth_multiplier=layer.depth_multiplier, **geo)
        if t == "dense":
            a = op.arrays
            return ref.dense_int8(inputs[0], a["weight"], a["bias"], a["mult"], a["shift"],
                                  in_zp=s["in_zp"], out_zp=s["out_zp"], act_min=s["act_min"],
                                  act_max=s["act_max"])
        if t == "avg_pool":
            return ref.avg_pool_int8(inputs[0], kernel=layer.kernel, act_min=s["act_min"],
                                     act_max=s["act_max"], **geo)
        if t == "max_pool":
            return ref.max_pool_int8(inputs[0], kernel=layer.kernel, act_min=s["act_min"],
                                     act_max=s["act_max"], **geo)
        if t == "add":
            return ref.add_int8(inputs[0], inputs[1], **s)
        if t == "clamp":
            return ref.clamp_int8(inputs[0], act_min=s["act_min"], act_max=s["act_max"])
    else:
        lo, hi = act_bounds_f(op.activation)
        if t in ("conv2d", "depthwise_conv2d"):
            a = op.arrays
            return ref.conv2d_f32(inputs[0], a["weight"], a["bias"], act_min=lo, act_max=hi,
                                  depthwise=t == "depthwise_conv2d",
                                  depth_multiplier=layer.depth_multiplier, **geo)
        if t == "dense":
            return ref.dense_f32(inputs[0], op.arrays["weight"], op.arrays["bias"],
                                 act_min=lo, act_max=hi)
        if t == "avg_pool":
            return ref.avg_pool_f32(inputs[0], kernel=layer.kernel, **geo)
        if t == "max_pool":
            return ref.max_pool_f32(inputs[0], kernel=layer.kernel, **geo)
        if t == "add":
            return ref.add_f32(inputs[0], inputs[1], act_min=lo, act_max=hi)
        if t == "clamp":
            return ref.clamp_f32(inputs[0], act_min=lo, act_max=hi)
    raise ValueError(f"op type {t!r} / dtype {dtype!r} has no reference")


def run_reference(net: Network, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every op's output (by tensor name), in execution order; the input under 'input'."""
    if tuple(x.shape) != net.input.shape:
        raise ValueError(f"input has shape {tuple(x.shape)}, the network takes "
                         f"{net.input.shape}")
    values: dict[str, np.ndarray] = {NETWORK_INPUT: x, **net.consts}
    for op in net.ops:
        ins = [values[t].reshape(op.layer.in_shapes[i]) for i, t in enumerate(op.inputs)]
        values[op.output] = run_op(op, ins, net.dtype)
    return values


# ------------------------------------------------------------------------------------------
# quantisation
# ------------------------------------------------------------------------------------------
def make_network(spec: NetworkSpec,
                 weights: dict[str, dict[str, np.ndarray]] | None = None) -> Network:
    """Float weights (``weights[layer] = {"weight", "bias"}`` in the layouts of
    ``reference.py``, e.g. from an ONNX model; seeded ones for the layers not given) and, for
    int8, TFLite-style quantisation of a checked architecture."""
    ops, aliases = build_ops(spec)
    tensors: dict[str, TensorInfo] = {
        NETWORK_INPUT: TensorInfo(NETWORK_INPUT, spec.input_shape, spec.dtype)}
    weights = weights or {}
    for op in ops:
        tensors[op.output] = TensorInfo(op.output, op.layer.out_shape, spec.dtype)
        op.arrays = _float_weights(op, spec.seed)
        given = weights.get(op.name)
        if given is not None:
            for key in ("weight", "bias"):
                want = op.arrays[key].shape
                got = np.asarray(given[key], dtype=np.float32)
                if got.shape != want:
                    raise ValueError(f"{op.name}: {key} has shape {got.shape}, the layer "
                                     f"needs {want}")
                op.arrays[key] = got
    net = Network(spec, ops, tensors, aliases)
    if spec.dtype == "float32":
        return net
    # float calibration pass (the float weights live in op.arrays until replaced)
    rng = np.random.default_rng(spec.seed + 1)
    xf = rng.uniform(-1.0, 1.0, size=spec.input_shape).astype(np.float32)
    values: dict[str, np.ndarray] = {NETWORK_INPUT: xf}
    for op in ops:
        ins = [values[t].reshape(op.layer.in_shapes[i]) for i, t in enumerate(op.inputs)]
        values[op.output] = run_op(op, ins, "float32")
    inp = tensors[NETWORK_INPUT]
    inp.scale, inp.zero_point = quant.choose_activation_params(-1.0, 1.0)
    for op in ops:
        ti = tensors[op.output]
        src = tensors[op.inputs[0]]
        if op.type in ("avg_pool", "max_pool", "clamp"):
            ti.scale, ti.zero_point = src.scale, src.zero_point
        else:
            v = values[op.output]
            ti.scale, ti.zero_point = quant.choose_activation_params(float(v.min()),
                                                                     float(v.max()))
        lo, hi = quant.activation_range(op.activation, ti.scale, ti.zero_point)
        if op.type in ("conv2d", "depthwise_conv2d", "dense"):
            w, b = op.arrays["weight"], op.arrays["bias"]
            axis = 0 if op.type == "dense" else -1
            ws = quant.per_channel_weight_scales(w, axis)
            wq = quant.quantize_weights(w, ws, axis)
            bq = quant.quantize_bias(b, src.scale, ws)
            mult, shift = quant.output_multipliers(src.scale, ws, ti.scale)
            op.arrays = {"weight": wq, "bias": bq, "mult": mult, "shift": shift}
            op.scalars = {"in_zp": src.zero_point, "out_zp": ti.zero_point,
                          "act_min": lo, "act_max": hi}
        elif op.type == "add":
            other = tensors[op.inputs[1]]
            p = quant.add_params(src.scale, other.scale, ti.scale)
            op.scalars = {"a_zp": src.zero_point, "b_zp": other.zero_point,
                          "out_zp": ti.zero_point, **p, "act_min": lo, "act_max": hi}
        else:
            op.scalars = {"act_min": lo, "act_max": hi}
    return net


def network_from_manifest(model: dict[str, Any], *, source: str | None = None) -> Network:
    from .spec import parse_network

    return make_network(parse_network(model, source=source))


def task_network(net: Network, op_index: int, x: np.ndarray | None = None
                 ) -> tuple[Network, np.ndarray]:
    """A one-op network that runs op ``op_index`` of ``net`` on the input it sees in ``net``
    (reference values for input ``x``): the firmware of one tuning task, measured alone.
    A second input (add) becomes a const tensor in flash. Returns (network, its input)."""
    import dataclasses

    values = run_reference(net, net.make_input() if x is None else x)
    op = net.ops[op_index]
    ins = [values[t].reshape(op.layer.in_shapes[i]) for i, t in enumerate(op.inputs)]
    names = [NETWORK_INPUT] + [f"const_{i}" for i in range(1, len(ins))]
    sub_op = dataclasses.replace(op, index=0, inputs=tuple(names))
    src = [net.tensors[t] for t in op.inputs]
    tensors = {n: TensorInfo(n, tuple(a.shape), net.dtype, t.scale, t.zero_point)
               for n, a, t in zip(names, ins, src, strict=True)}
    tensors[op.output] = dataclasses.replace(net.tensors[op.output])
    spec = NetworkSpec(name=f"{net.name}.{op.name}", dtype=net.dtype,
                       input_shape=tuple(ins[0].shape), layers=[op.layer], seed=net.spec.seed,
                       source=net.spec.source)
    sub = Network(spec, [sub_op], tensors, {NETWORK_INPUT: NETWORK_INPUT, op.name: op.output},
                  consts={n: a for n, a in zip(names[1:], ins[1:], strict=True)})
    return sub, ins[0]
