"""The MLPerf Tiny v1 reference architectures, built in code as ``experiment.model`` dicts.

Layer by layer as the reference training scripts of the MLPerf Tiny benchmark define them
(batch normalisation folded into the preceding conv/dense, dropout left out, the final softmax
left out: it does not change the argmax), with seeded random weights:

- :func:`ds_cnn_kws`: keyword spotting DS-CNN, input 49x10x1 (MFCC), 12 classes: conv 10x4/2
  x64, four depthwise-separable blocks (3x3 depthwise + 1x1 x64), average pool (24, 5),
  dense 12.
- :func:`resnet8`: image classification ResNet-8 (``resnet_v1_eembc``), input 32x32x3:
  conv 3x3 x16, three residual stacks (16, 32/2, 64/2; 1x1 projection shortcut when the shape
  changes), average pool 8, dense 10.
- :func:`mobilenet_v1_vww`: visual wake words MobileNetV1 alpha 0.25, input 96x96x3: conv 3x3/2
  x8, 13 depthwise-separable blocks, global average pool, dense 2.
- :func:`fc_autoencoder`: anomaly detection FC autoencoder, 640 inputs: dense 128 x4, dense 8,
  dense 128 x4, dense 640 (ReLU after every layer but the last).
"""

from __future__ import annotations

from typing import Any

Model = dict[str, Any]


def ds_cnn_kws(seed: int = 0, dtype: str = "int8") -> Model:
    layers: list[dict[str, Any]] = [
        {"name": "conv1", "type": "conv2d", "filters": 64, "kernel": [10, 4], "stride": 2,
         "padding": "same", "activation": "relu"},
    ]
    for i in range(1, 5):
        layers += [
            {"name": f"dw{i}", "type": "depthwise_conv2d", "kernel": 3, "padding": "same",
             "activation": "relu"},
            {"name": f"pw{i}", "type": "conv2d", "filters": 64, "kernel": 1,
             "activation": "relu"},
        ]
    layers += [
        {"name": "pool", "type": "avg_pool", "pool": [24, 5]},
        {"name": "flatten", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 12},
    ]
    return {"name": "ds_cnn_kws", "dtype": dtype, "input": [1, 49, 10, 1], "seed": seed,
            "layers": layers}


def resnet8(seed: int = 0, dtype: str = "int8") -> Model:
    layers: list[dict[str, Any]] = [
        {"name": "conv1", "type": "conv2d", "filters": 16, "kernel": 3, "padding": "same",
         "activation": "relu"},
    ]
    prev = "conv1"
    for stack, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        a, b = f"s{stack}_conv_a", f"s{stack}_conv_b"
        layers += [
            {"name": a, "type": "conv2d", "inputs": [prev], "filters": filters, "kernel": 3,
             "stride": stride, "padding": "same", "activation": "relu"},
            {"name": b, "type": "conv2d", "filters": filters, "kernel": 3, "padding": "same"},
        ]
        skip = prev
        if stride != 1:
            skip = f"s{stack}_shortcut"
            layers.append({"name": skip, "type": "conv2d", "inputs": [prev],
                           "filters": filters, "kernel": 1, "stride": stride,
                           "padding": "same"})
        add = f"s{stack}_add"
        layers.append({"name": add, "type": "add", "inputs": [skip, b], "activation": "relu"})
        prev = add
    layers += [
        {"name": "pool", "type": "avg_pool", "pool": 8},
        {"name": "flatten", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 10},
    ]
    return {"name": "resnet8", "dtype": dtype, "input": [1, 32, 32, 3], "seed": seed,
            "layers": layers}


#: MobileNetV1 (filters at alpha 1, stride) of the 13 depthwise-separable blocks.
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_v1_vww(seed: int = 0, dtype: str = "int8", alpha: float = 0.25) -> Model:
    layers: list[dict[str, Any]] = [
        {"name": "conv1", "type": "conv2d", "filters": int(32 * alpha), "kernel": 3,
         "stride": 2, "padding": "same", "activation": "relu"},
    ]
    for i, (filters, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        layers += [
            {"name": f"dw{i}", "type": "depthwise_conv2d", "kernel": 3, "stride": stride,
             "padding": "same", "activation": "relu"},
            {"name": f"pw{i}", "type": "conv2d", "filters": int(filters * alpha),
             "kernel": 1, "activation": "relu"},
        ]
    layers += [
        {"name": "pool", "type": "avg_pool", "pool": "global"},
        {"name": "flatten", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 2},
    ]
    return {"name": "mobilenet_v1_vww", "dtype": dtype, "input": [1, 96, 96, 3],
            "seed": seed, "layers": layers}


def fc_autoencoder(seed: int = 0, dtype: str = "int8") -> Model:
    units = [128, 128, 128, 128, 8, 128, 128, 128, 128]
    layers: list[dict[str, Any]] = [
        {"name": f"fc{i}", "type": "dense", "units": u, "activation": "relu"}
        for i, u in enumerate(units, start=1)
    ]
    layers.append({"name": "fc_out", "type": "dense", "units": 640})
    return {"name": "fc_autoencoder", "dtype": dtype, "input": [1, 640], "seed": seed,
            "layers": layers}


MODELS = {"ds_cnn_kws": ds_cnn_kws, "resnet8": resnet8, "mobilenet_v1_vww": mobilenet_v1_vww,
          "fc_autoencoder": fc_autoencoder}
#: The board each reference model fits (lm3s6965evb: 64 KiB RAM, 248 KiB flash).
MODEL_BOARDS = {"ds_cnn_kws": "lm3s6965evb", "resnet8": "lm3s6965evb",
                "mobilenet_v1_vww": "mps2-an385", "fc_autoencoder": "mps2-an385"}


def random_network(seed: int, dtype: str = "int8", max_layers: int = 9) -> Model:
    """A random, valid small network (for "unseen shapes and orders" tests): a stem conv, then
    a random sequence of conv (kernel 1..5, stride 1..2, same/valid/explicit padding),
    depthwise (multiplier 1..2), pooling, residual blocks (add) and standalone relus, then
    flatten and one or two dense layers."""
    import random

    rnd = random.Random(seed)
    h = rnd.randint(6, 14)
    w = rnd.randint(6, 14)
    c = rnd.randint(1, 4)
    layers: list[dict[str, Any]] = []
    names = iter(f"l{i}" for i in range(1000))
    shape = [h, w, c]

    def conv_out(size: int, k: int, s: int, pad: str) -> int:
        return -(-size // s) if pad == "same" else (size - k) // s + 1

    def add(layer: dict[str, Any]) -> str:
        layer["name"] = next(names)
        layers.append(layer)
        return layer["name"]

    acts = [None, "relu", "relu6"]
    f = rnd.choice([4, 6, 8])
    add({"type": "conv2d", "filters": f, "kernel": rnd.choice([1, 3]), "padding": "same",
         "activation": rnd.choice(acts)})
    shape = [h, w, f]
    for _ in range(rnd.randint(2, max_layers)):
        kind = rnd.choice(["conv2d", "depthwise_conv2d", "pool", "residual", "relu"])
        hh, ww, cc = shape
        if kind == "conv2d":
            k = rnd.randint(1, min(5, hh, ww))
            s = rnd.choice([1, 1, 2])
            pad = rnd.choice(["same", "valid"])
            if conv_out(hh, k, s, pad) < 1 or conv_out(ww, k, s, pad) < 1:
                continue
            f = rnd.choice([2, 4, 6, 8, 12])
            add({"type": "conv2d", "filters": f, "kernel": [k, rnd.randint(1, min(5, ww))]
                 if pad == "same" else k, "stride": s, "padding": pad,
                 "activation": rnd.choice(acts)})
            kk = layers[-1]["kernel"]
            kw_ = kk[1] if isinstance(kk, list) else kk
            shape = [conv_out(hh, k, s, pad), conv_out(ww, kw_, s, pad), f]
        elif kind == "depthwise_conv2d":
            m = rnd.choice([1, 1, 2])
            s = rnd.choice([1, 2])
            add({"type": "depthwise_conv2d", "kernel": 3, "stride": s, "padding": "same",
                 "depth_multiplier": m, "activation": rnd.choice(acts)})
            shape = [-(-hh // s), -(-ww // s), cc * m]
        elif kind == "pool" and min(hh, ww) >= 2:
            p = rnd.choice([2, 3]) if min(hh, ww) >= 3 else 2
            pad = rnd.choice(["same", "valid"])
            add({"type": rnd.choice(["avg_pool", "max_pool"]), "pool": p,
                 "stride": rnd.choice([1, 2]), "padding": pad})
            s = layers[-1]["stride"]
            shape = [conv_out(hh, p, s, pad), conv_out(ww, p, s, pad), cc]
        elif kind == "residual":
            skip = layers[-1]["name"]
            add({"type": "conv2d", "filters": cc, "kernel": 3, "padding": "same",
                 "activation": "relu"})
            b = add({"type": "conv2d", "filters": cc, "kernel": 1})
            add({"type": "add", "inputs": [skip, b], "activation": rnd.choice(acts)})
        elif kind == "relu":
            add({"type": rnd.choice(["relu", "relu6"])})
    if rnd.random() < 0.5 and min(shape[:2]) > 1:
        add({"type": "avg_pool", "pool": "global"})
    add({"type": "flatten"})
    if rnd.random() < 0.5:
        add({"type": "dense", "units": rnd.randint(4, 16), "activation": "relu"})
    add({"type": "dense", "units": rnd.randint(2, 10)})
    return {"name": f"random_{seed}", "dtype": dtype, "input": [1, h, w, c], "seed": seed,
            "layers": layers}
