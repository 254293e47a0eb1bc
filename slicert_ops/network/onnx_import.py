"""ONNX import through TVM's Relax ONNX frontend (``tvm.relax.frontend.onnx.from_onnx``).

The frontend turns the ONNX graph into a Relax function (shape inference, operator
conversion); this module walks its dataflow bindings and maps them onto network layers
(NCHW -> NHWC, weights into the layouts of ``reference.py``), with the model's float weights.
The network is then quantised like any other (``make_network``: calibration, per-channel
int8), so a float ONNX model becomes a TFLite-style int8 network.

Supported (after the frontend): ``nn.conv2d`` (groups 1, or groups = input channels:
depthwise), a following ``add`` of a per-channel constant (bias), ``matmul`` with a constant
(dense; Gemm/MatMul), ``nn.relu``, clip to [0, 6] (relu6; the frontend's
maximum/minimum form included), ``nn.max_pool2d``, ``nn.avg_pool2d`` (count_include_pad
false or no padding), ``mean`` over H and W (global average pool), ``reshape``/``flatten`` to
[1, N], ``add`` of two tensors (residual). Anything else is reported by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .spec import NETWORK_INPUT, NetworkError, Problem


class _T:
    """A tensor of the network being built: the layer producing it and its NCHW shape."""

    def __init__(self, layer: str, shape: tuple[int, ...], flat_from: tuple[int, ...] | None
                 = None) -> None:
        self.layer = layer
        self.shape = shape              # as Relax sees it (NCHW or [1, N])
        self.flat_from = flat_from      # (C, H, W) when this flat tensor came from NCHW data


def _shape(expr: Any) -> tuple[int, ...]:
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None)
    if shape is None:
        raise ValueError(f"no static shape for {expr}")
    return tuple(int(s) for s in shape)


def _name(gv: Any) -> str:
    return getattr(gv, "name_hint", None) or str(gv).split('"')[1]


def import_onnx(path: str | Path, *, name: str | None = None, dtype: str = "int8",
                seed: int = 0, field: str = "experiment.model.onnx"
                ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """(``experiment.model`` dict with layers, float weights by layer name) of an ONNX file."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    p = Path(path)
    if not p.is_file():
        raise NetworkError([Problem(field, f"{p}: no such file", "give a path relative to "
                                    "the manifest")])
    try:
        model = onnx.load(str(p))
        mod = from_onnx(model, keep_params_in_input=False)
    except Exception as exc:  # noqa: BLE001 - the frontend raises many kinds
        raise NetworkError([Problem(field, f"{p}: TVM's ONNX frontend failed: {exc}")]) from None
    func = mod["main"]
    if len(func.params) != 1:
        raise NetworkError([Problem(field, f"{p}: the model has {len(func.params)} inputs; "
                                    "only single-input models are supported")])
    in_shape = _shape(func.params[0])
    if len(in_shape) == 4:
        n, c, h, w = in_shape
        net_input = [n, h, w, c]
    elif len(in_shape) == 2:
        net_input = list(in_shape)
    else:
        raise NetworkError([Problem(field, f"input shape {list(in_shape)}: need NCHW or "
                                    "[N, features]")])
    env: dict[str, Any] = {func.params[0].name: _T(NETWORK_INPUT, in_shape)}
    layers: list[dict[str, Any]] = []
    weights: dict[str, dict[str, np.ndarray]] = {}
    problems: list[Problem] = []
    counts: dict[str, int] = {}

    def new_layer(kind: str, **fields: Any) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        lname = f"{kind}_{counts[kind]}"
        layers.append({"name": lname, "type": kind, **fields})
        return lname

    def val(e: Any) -> Any:
        if type(e).__name__ in ("GenericConst", "Constant"):
            return np.asarray(e.value.numpy() if hasattr(e, "value") else e.data.numpy())
        key = getattr(e, "name", None)
        if key in env:
            return env[key]
        if type(e).__name__ == "PrimValue":
            return np.asarray(e.value.value)
        if type(e).__name__ == "ShapeExpr":
            return np.asarray([int(v) for v in e.values], dtype=np.int64)
        raise KeyError(f"unknown expression {e}")

    bindings = [b for blk in func.body.blocks for b in blk.bindings]
    for b in bindings:
        var = b.var.name
        e = b.value
        if not hasattr(e, "op"):  # alias binding (gv = lv)
            env[var] = val(e)
            continue
        op = e.op.name if hasattr(e.op, "name") else str(e.op)
        try:
            args = [val(a) for a in e.args] if op != "relax.call_tir" else []
        except KeyError as exc:
            if not problems:  # otherwise a consequence of an earlier problem
                problems.append(Problem(field, f"{op}: {exc}"))
            continue
        consts = all(isinstance(a, np.ndarray) for a in args)
        a = e.attrs
        if op == "relax.call_tir":
            callee = _name(e.args[0])
            try:
                xs = [val(x) for x in e.args[1].fields]
            except KeyError as exc:
                if not problems:
                    problems.append(Problem(field, f"{callee}: {exc}"))
                continue
            if callee in ("maximum", "minimum") and len(xs) == 2 and isinstance(xs[0], _T) \
                    and isinstance(xs[1], np.ndarray) and xs[1].size == 1:
                bound = float(xs[1].reshape(()))
                t = xs[0]
                if callee == "maximum" and bound == 0.0:
                    env[var] = _T(new_layer("relu", inputs=[t.layer]), t.shape, t.flat_from)
                    continue
                if callee == "minimum" and bound == 6.0 and layers and \
                        layers[-1]["name"] == t.layer and layers[-1]["type"] == "relu":
                    layers[-1]["type"] = "relu6"
                    env[var] = t
                    continue
            problems.append(Problem(field, f"unsupported {callee} in the model (only clip to "
                                    "[0, 6] / max with 0 are mapped)"))
            continue
        if consts and op in ("relax.reshape", "relax.permute_dims", "relax.isnan",
                             "relax.where", "relax.astype"):
            if op == "relax.reshape":
                env[var] = args[0].reshape(_shape(b.var))
            elif op == "relax.permute_dims":
                env[var] = np.transpose(args[0], [int(x) for x in a.axes] if a.axes else None)
            elif op == "relax.isnan":
                env[var] = np.asarray(np.isnan(args[0]))
            elif op == "relax.where":
                env[var] = np.asarray(np.where(*args))
            else:
                env[var] = np.asarray(args[0]).astype(str(a.dtype))
            continue
        if op == "relax.nn.conv2d":
            x, wt = args
            if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" or \
                    any(int(d) != 1 for d in a.dilation):
                problems.append(Problem(field, "conv2d: only NCHW/OIHW without dilation"))
                continue
            pt, pl, pb, pr = (int(v) for v in a.padding)
            groups = int(a.groups)
            cin = x.shape[1]
            o, _i, kh, kw = wt.shape
            common = {"inputs": [x.layer], "kernel": [kh, kw],
                      "stride": [int(s) for s in a.strides], "padding": [pt, pb, pl, pr]}
            if groups == 1:
                lname = new_layer("conv2d", filters=int(o), **common)
                w_ = np.ascontiguousarray(wt.transpose(2, 3, 1, 0))
            elif groups == cin:
                lname = new_layer("depthwise_conv2d", depth_multiplier=int(o // cin), **common)
                w_ = np.ascontiguousarray(wt[:, 0].transpose(1, 2, 0))
            else:
                problems.append(Problem(field, f"conv2d with {groups} groups: only 1 or the "
                                        "input channels (depthwise) are supported"))
                continue
            weights[lname] = {"weight": w_.astype(np.float32),
                              "bias": np.zeros(int(o), np.float32)}
            env[var] = _T(lname, _shape(b.var))
            continue
        if op == "relax.matmul":
            x, wt = args
            if not (isinstance(x, _T) and isinstance(wt, np.ndarray) and wt.ndim == 2):
                problems.append(Problem(field, "matmul: only tensor x constant (dense)"))
                continue
            w_ = wt.T  # (OUT, IN)
            if x.flat_from is not None:  # NCHW flatten -> NHWC flatten order
                c, h, w = x.flat_from
                w_ = w_.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(w_.shape[0], -1)
            lname = new_layer("dense", units=int(wt.shape[1]), inputs=[x.layer])
            weights[lname] = {"weight": np.ascontiguousarray(w_).astype(np.float32),
                              "bias": np.zeros(int(wt.shape[1]), np.float32)}
            env[var] = _T(lname, _shape(b.var))
            continue
        if op == "relax.add":
            x, y = args
            if isinstance(y, _T) and isinstance(x, np.ndarray):
                x, y = y, x
            if isinstance(x, _T) and isinstance(y, np.ndarray):
                if x.layer in weights and y.size == weights[x.layer]["bias"].size:
                    weights[x.layer]["bias"] = weights[x.layer]["bias"] + y.reshape(-1)
                    env[var] = x
                    continue
                problems.append(Problem(field, f"add of a constant to {x.layer}: only a "
                                        "per-channel bias right after conv/dense is supported"))
                continue
            if isinstance(x, _T) and isinstance(y, _T):
                env[var] = _T(new_layer("add", inputs=[x.layer, y.layer]), x.shape)
                continue
        if op == "relax.nn.relu":
            t = args[0]
            env[var] = _T(new_layer("relu", inputs=[t.layer]), t.shape, t.flat_from)
            continue
        if op == "relax.clip":
            t = args[0]
            lo, hi = (float(np.asarray(v).reshape(())) for v in args[1:3])
            if lo == 0.0 and hi in (6.0, float("inf")):
                kind = "relu6" if hi == 6.0 else "relu"
                env[var] = _T(new_layer(kind, inputs=[t.layer]), t.shape, t.flat_from)
                continue
        if op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
            t = args[0]
            pt, pl, pb, pr = (int(v) for v in a.padding)
            if bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation) or (
                    op.endswith("avg_pool2d") and bool(a.count_include_pad) and
                    any((pt, pl, pb, pr))):
                problems.append(Problem(field, f"{op}: ceil_mode, dilation and padded "
                                        "count_include_pad are not supported"))
                continue
            kind = "max_pool" if "max" in op else "avg_pool"
            env[var] = _T(new_layer(kind, inputs=[t.layer],
                                    pool=[int(v) for v in a.pool_size],
                                    stride=[int(v) for v in a.strides],
                                    padding=[pt, pb, pl, pr]), _shape(b.var))
            continue
        if op == "relax.mean":
            t = args[0]
            axes = sorted(int(v) for v in a.axis) if a.axis is not None else []
            if len(t.shape) == 4 and axes == [2, 3]:
                out = _shape(b.var)
                lname = new_layer("avg_pool", inputs=[t.layer], pool="global")
                env[var] = _T(lname, (1, t.shape[1], 1, 1) if len(out) == 4 else out,
                              (t.shape[1], 1, 1) if len(out) == 2 else None)
                continue
        if op in ("relax.reshape", "relax.flatten") and isinstance(args[0], _T):
            t = args[0]
            out = _shape(b.var)
            if len(out) == 2 and out[0] == 1:
                if len(t.shape) == 4:
                    lname = new_layer("flatten", inputs=[t.layer])
                    env[var] = _T(lname, out, tuple(t.shape[1:]))
                else:
                    env[var] = _T(t.layer, out, t.flat_from)
                continue
            if len(t.shape) == 4 and len(out) == 4 and out == t.shape:
                env[var] = t
                continue
        if op == "relax.nn.softmax":
            problems.append(Problem(field, "softmax: not implemented in the firmware (remove "
                                    "it from the model; the argmax of the logits is the same)"))
            continue
        if op == "relax.nn.batch_norm":
            problems.append(Problem(field, "batch_norm: fold it into the convolution before "
                                    "exporting"))
            continue
        problems.append(Problem(field, f"unsupported operator {op} in {p.name}"))
    if problems:
        raise NetworkError(problems)
    model_dict = {"name": name or p.stem, "dtype": dtype, "input": net_input, "seed": seed,
                  "layers": layers}
    return model_dict, weights
