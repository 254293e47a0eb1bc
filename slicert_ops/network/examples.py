"""Example network manifests (experiments/networks/*.yaml), generated from :mod:`.models`.

    python -m slicert_ops.network.examples [--out experiments/networks] [--check]

writes one manifest per MLPerf Tiny reference model (and a small network using every layer
type), each on the board that fits it, with a small per-type schedule space, and the same
models on the Cortex-M4F (``*_m4.yaml``: mps2-an386 at 120 MHz); ``--check``
only verifies that the files on disk are what the code generates (exit 1 otherwise). Run one
with ``slicert run experiments/networks/kws_ds_cnn.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .models import MODEL_BOARDS, MODELS

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "experiments" / "networks"

DESCRIPTIONS = {
    "ds_cnn_kws": "MLPerf Tiny v1 keyword spotting: DS-CNN, 49x10x1 MFCC input, 12 classes",
    "resnet8": "MLPerf Tiny v1 image classification: ResNet-8, 32x32x3 input, 10 classes",
    "mobilenet_v1_vww": "MLPerf Tiny v1 visual wake words: MobileNetV1 0.25x, 96x96x3 input",
    "fc_autoencoder": "MLPerf Tiny v1 anomaly detection: FC autoencoder, 640 inputs",
}
FILES = {"ds_cnn_kws": "kws_ds_cnn.yaml", "resnet8": "ic_resnet8.yaml",
         "mobilenet_v1_vww": "vww_mobilenet_v1.yaml", "fc_autoencoder": "ad_fc_autoencoder.yaml",
         "all_layers": "all_layer_types.yaml", "ds_cnn_kws_deadline": "kws_ds_cnn_deadline.yaml"}

# The same examples on the Cortex-M4F (mps2-an386, cycle model cm4-v1) at 120 MHz, the clock
# of MLPerf Tiny's Cortex-M4 reference board (NUCLEO-L4R5ZI): same models and schedule
# spaces, ``<name>_m4``. At 120 MHz the 200 us IRQ period and deadline are 24,000 cycles.
M4_BOARD = "mps2-an386"
M4_MHZ = 120
M4 = ("ds_cnn_kws", "resnet8", "mobilenet_v1_vww", "fc_autoencoder", "ds_cnn_kws_deadline")
FILES.update({f"{k}_m4": FILES[k].replace(".yaml", "_m4.yaml") for k in M4})

# Keyword spotting under a 200 µs real-time deadline: granules small enough that the RT job
# meets every deadline (one output channel group per yield check).
DEADLINE_SPACE: dict[str, Any] = {
    "conv2d": {"micro_tile": [1], "channel_tile": [4, 8, 16]},
    "depthwise_conv2d": {"channel_tile": [8, 16, 32]},
    "avg_pool": {"channel_tile": [4, 8]},
    "dense": {"micro_tile": [1, 2]},
}
DEADLINE_OBJECTIVE = "kernel_cycles subject to deadline_misses <= 0"

# The schedule spaces of the examples (per op type, a layer's own where one layer differs):
# the kernel forms against each other with the register blocks and reduction unrolling that
# won on these shapes (bench/bench_kernels.py), and micro-tiles of two granule sizes.
SPACES: dict[str, dict[str, Any]] = {
    # 25x5 feature maps: conv1 (10x4, one input channel) in im2col with a row of 5 pixels per
    # register block; the 1x1 layers as flat-pixel GEMMs (pointwise) or im2col
    "ds_cnn_kws": {"conv2d": {"tile_size": [4, 5], "micro_tile": [2, 4, 5],
                              "pixel_block": [2, 5], "unroll": [2, 4],
                              "form": ["im2col", "pointwise"], "reduction_unroll": [4, 16]},
                   "depthwise_conv2d": {"tile_size": [5], "micro_tile": [1, 5],
                                        "pixel_block": [1, 5], "unroll": [1, 2, 4]},
                   "dense": {"tile_size": [12], "micro_tile": [12], "unroll": [3, 4, 6]}},
    # 3x3 convs of 16-64 channels: block or im2col, the whole 16 input channels unrolled
    "resnet8": {"conv2d": {"tile_size": [8], "micro_tile": [2, 4], "pixel_block": [2, 4],
                           "unroll": [2, 4], "form": ["block", "im2col"],
                           "reduction_unroll": [4, 16], "channel_tile": [16, 32]},
                "dense": {"tile_size": [10], "micro_tile": [5, 10], "unroll": [5, 10]},
                "layers": {"conv1": {"tile_size": [8], "micro_tile": [2, 4],
                                     "pixel_block": [2, 4], "unroll": [2, 4],
                                     "form": ["im2col"]}}},
    # 13 pointwise layers (flat pixels, 8-256 channels) and depthwise maps from 48x48 to 3x3
    "mobilenet_v1_vww": {"conv2d": {"tile_size": [2, 4], "micro_tile": [2],
                                    "pixel_block": [2, 4], "unroll": [2, 4],
                                    "form": ["pointwise"], "reduction_unroll": [4, 16]},
                         "depthwise_conv2d": {"tile_size": [2, 4, 8], "micro_tile": [2, 4],
                                              "pixel_block": [2, 4], "unroll": [1, 2]},
                         "layers": {"conv1": {"tile_size": [8], "micro_tile": [4, 8],
                                              "pixel_block": [2, 4], "unroll": [2, 4],
                                              "form": ["block", "im2col"]}}},
    "fc_autoencoder": {"dense": {"unroll": [4, 8], "reduction_unroll": [4, 8]}},
}

# On the Cortex-M4F the int8 conv2d and dense layers can also take the simd form (SMLAD on
# SXTB16 pairs, network/simd.py), searched against the scalar forms: one pixel x 4 channels
# and no reduction unrolling won on DS-CNN (the register file holds a block's SXTB16 lanes
# too, so its best blocks are smaller than the scalar forms').
M4_EXTRA: dict[str, dict[str, Any]] = {
    "ds_cnn_kws": {"conv2d": {"form": ["im2col", "pointwise", "simd"], "pixel_block": [1, 2, 5],
                              "reduction_unroll": [1, 4, 16]},
                   "dense": {"form": ["block", "simd"]}},
    "resnet8": {"conv2d": {"form": ["block", "im2col", "simd"], "pixel_block": [1, 2, 4],
                           "reduction_unroll": [1, 4, 16]},
                "dense": {"form": ["block", "simd"]},
                "layers": {"conv1": {"form": ["im2col", "simd"], "pixel_block": [1, 2, 4]}}},
    "mobilenet_v1_vww": {"conv2d": {"form": ["pointwise", "simd"], "pixel_block": [1, 2, 4],
                                    "reduction_unroll": [1, 4, 16]},
                         "layers": {"conv1": {"form": ["block", "im2col", "simd"],
                                              "pixel_block": [1, 2, 4]}}},
    "fc_autoencoder": {"dense": {"form": ["block", "simd"], "reduction_unroll": [1, 4, 8]}},
    "ds_cnn_kws_deadline": {"conv2d": {"form": ["im2col", "pointwise", "simd"]},
                            "dense": {"form": ["block", "simd"]}},
}


def m4_space(key: str, space: dict[str, Any]) -> dict[str, Any]:
    """The M3 example's space with the M4's additions (:data:`M4_EXTRA`) merged per type."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in space.items()}
    for op_type, extra in M4_EXTRA.get(key, {}).items():
        if op_type == "layers":
            out["layers"] = {name: {**out["layers"].get(name, {}), **sp}
                             for name, sp in {**out.get("layers", {}), **extra}.items()}
        else:
            out[op_type] = {**out.get(op_type, {}), **extra}
    return out


ALL_LAYERS: dict[str, Any] = {
    "name": "all_layer_types", "dtype": "int8", "input": [1, 12, 10, 3], "seed": 0,
    "layers": [
        {"name": "c1", "type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
        {"name": "r1", "type": "relu"},
        {"name": "dw", "type": "depthwise_conv2d", "kernel": 3, "stride": 2, "padding": "same",
         "activation": "relu6"},
        {"name": "pw", "type": "conv2d", "filters": 8, "kernel": 1},
        {"name": "mp", "type": "max_pool", "pool": 2, "inputs": ["r1"]},
        {"name": "sum", "type": "add", "inputs": ["mp", "pw"], "activation": "relu"},
        {"name": "ap", "type": "avg_pool", "pool": 3, "stride": 2, "padding": "same"},
        {"name": "r6", "type": "relu6"},
        {"name": "flat", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 10},
    ]}


def manifest(key: str) -> dict[str, Any]:
    if key.endswith("_m4"):
        m = manifest(key.removesuffix("_m4"))
        exp = m["experiment"]
        exp["name"] += "_m4"
        exp["description"] += f" on the Cortex-M4F ({M4_BOARD}, {M4_MHZ} MHz)"
        exp["runner"] = {"board": M4_BOARD, "cpu_mhz": M4_MHZ,
                         **{k: v for k, v in exp["runner"].items() if k != "board"}}
        exp["parameters"] = m4_space(key.removesuffix("_m4"), exp["parameters"])
        return m
    if key == "ds_cnn_kws_deadline":
        m = manifest("ds_cnn_kws")
        exp = m["experiment"]
        exp["name"] += "_deadline"
        exp["description"] = ("MLPerf Tiny v1 keyword spotting (DS-CNN) under a 200 us "
                              "real-time deadline: per task the fastest schedule that misses "
                              "no deadline of the real-time job")
        exp["parameters"] = {**DEADLINE_SPACE, "slice": [64]}
        exp["search"] = {"objective": DEADLINE_OBJECTIVE}
        return m
    if key == "all_layers":
        model, board, desc = ALL_LAYERS, "lm3s6965evb", "every layer type in one small network"
        params: dict[str, Any] = {"conv2d": {"tile_size": [2, 4], "unroll": [1, 2]},
                                  "slice": [64]}
    else:
        model, board, desc = MODELS[key](), MODEL_BOARDS[key], DESCRIPTIONS[key]
        params = {**SPACES[key], "slice": [64]}
    return {"experiment": {
        "name": f"net_{model['name']}",
        "description": desc + " (seeded random weights; BN folded, softmax left out)",
        "repeat": 1,
        "model": model,
        "parameters": params,
        "runner": {"board": board, "simulate_irq_load": True, "irq_period_us": 200,
                   "irq_jitter_us": 50, "timeout_s": 300},
    }}


def render(key: str) -> str:
    base = key.removesuffix("_m4")
    head = (f"# Generated by `python -m slicert_ops.network.examples` from "
            f"slicert_ops/network/{'models' if base in MODELS else 'examples'}.py: "
            "edit the code, not this file.\n")
    return head + yaml.safe_dump(manifest(key), sort_keys=False, default_flow_style=None,
                                 width=160)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    stale = []
    for key, name in FILES.items():
        path = args.out / name
        text = render(key)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
    if stale:
        print("stale: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
