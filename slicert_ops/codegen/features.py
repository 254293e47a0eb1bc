"""Numeric features of one candidate for the cost model.

Computed from the shapes and the schedule parameters alone (no TVM, microseconds), so that a
search can rank candidates it has not generated yet; ``generate_kernel`` stores the same dict
in ``tvm_config["features"]``. Flat ``{name: int | float}`` with a fixed key order, the same
keys for every operator type (0 / 1 where a feature does not apply).
"""

from __future__ import annotations

import math

from .spec import FORM_DIRECT, FORMS, ITEMSIZE, OperatorSpec, ScheduleParams, tile_counts

# f2: the kernel form (one-hot), its register block and reduction unrolling; f3: the simd
# form's one-hot column
FEATURES_VERSION = "f3"
FORM_NAMES = tuple(FORMS)  # in number order


def _conv_loops(op: OperatorSpec, s: ScheduleParams, c: dict[str, int]) -> dict[str, int]:
    kh, kw = op.kernel
    return {
        "loop_batch": op.input[0],
        "loop_macro_y": c["macro_tiles_y"], "loop_macro_x": c["macro_tiles_x"],
        "loop_micro_y": c["micro_per_macro_side"], "loop_micro_x": c["micro_per_macro_side"],
        "loop_inner_y": s.micro_tile, "loop_inner_x": s.micro_tile,
        "loop_chan_outer": int(op.out_channels) // s.unroll,
        "loop_red_kh": kh, "loop_red_kw": kw, "loop_red_c": op.input[3],
        "loop_unrolled": s.unroll,
    }


def _dense_loops(op: OperatorSpec, s: ScheduleParams, c: dict[str, int]) -> dict[str, int]:
    return {
        "loop_batch": op.input[0],
        "loop_macro_y": 1, "loop_macro_x": c["macro_tiles_x"],
        "loop_micro_y": 1, "loop_micro_x": c["micro_per_macro_side"],
        "loop_inner_y": 1, "loop_inner_x": s.micro_tile,
        "loop_chan_outer": 1,
        "loop_red_kh": 1, "loop_red_kw": 1, "loop_red_c": op.input[1] // s.unroll,
        "loop_unrolled": s.unroll,
    }


def _tile_bytes(op: OperatorSpec, rows: int, cols: int) -> dict[str, int]:
    """Bytes touched by a tile of rows x cols outputs (conv: pixels x all channels; dense:
    cols units of one batch row): input window + weights + output."""
    isz, osz = ITEMSIZE[op.dtype], ITEMSIZE[op.output_dtype]
    if op.type == "conv2d":
        kh, kw = op.kernel
        c = op.input[3]
        k = int(op.out_channels)
        in_rows = (rows - 1) * op.stride + kh
        in_cols = (cols - 1) * op.stride + kw
        return {"in": in_rows * in_cols * c * isz, "w": kh * kw * c * k * isz,
                "out": rows * cols * k * osz}
    n_in = op.input[1]
    return {"in": n_in * isz, "w": n_in * cols * isz, "out": cols * osz}


def features(op: OperatorSpec, sched: ScheduleParams) -> dict[str, float]:
    """The flat feature dict of (operator, schedule); the schedule must be valid."""
    s = sched.resolved(op)
    c = tile_counts(op, s)
    conv = op.type == "conv2d"
    out_elems = math.prod(op.output_shape)
    red = op.reduction_size
    per_pixel = int(op.out_channels) if conv else 1
    if conv:
        _, oh, ow, _ = op.output_shape
        extents = [oh, ow]
        loops = _conv_loops(op, s, c)
        micro_outputs = s.micro_tile * s.micro_tile * per_pixel
        macro_outputs = s.tile_size * s.tile_size * per_pixel
        macro_b = _tile_bytes(op, s.tile_size, s.tile_size)
        micro_b = _tile_bytes(op, s.micro_tile, s.micro_tile)
        block = s.pixel_block if s.blocked else 1
        accumulators = s.unroll * block
        body_stmts = 3 * accumulators  # init + MAC + write-back per accumulator
    else:
        extents = [op.output_shape[1]]
        loops = _dense_loops(op, s, c)
        micro_outputs = s.micro_tile
        macro_outputs = s.tile_size
        macro_b = _tile_bytes(op, 1, s.tile_size)
        micro_b = _tile_bytes(op, 1, s.micro_tile)
        block = s.unroll if s.blocked else 1   # the block form: unroll units per block
        accumulators = block
        body_stmts = s.reduction_unroll * block if s.blocked else s.unroll
    guarded = int(any(e % s.tile_size for e in extents) or s.tile_size % s.micro_tile)
    isz, osz = ITEMSIZE[op.dtype], ITEMSIZE[op.output_dtype]
    data_bytes = math.prod(op.input_shapes[0]) * isz
    weight_bytes = math.prod(op.input_shapes[1]) * isz
    f: dict[str, float] = {
        "op_conv2d": int(conv),
        "op_dense": int(not conv),
        "dtype_float32": int(op.dtype == "float32"),
        "batch": op.input[0],
        "in_h": op.input[1] if conv else 1,
        "in_w": op.input[2] if conv else 1,
        "in_c": op.input[3] if conv else op.input[1],
        "kernel_h": op.kernel[0] if conv else 1,
        "kernel_w": op.kernel[1] if conv else 1,
        "out_h": op.output_shape[1] if conv else 1,
        "out_w": op.output_shape[2] if conv else 1,
        "out_c": per_pixel if conv else op.output_shape[1],
        "stride": op.stride if conv else 1,
        "padding": op.padding if conv else 0,
        "padding_checks": int(conv and op.padding > 0),
        "tile_size": s.tile_size,
        "micro_tile": s.micro_tile,
        "unroll": s.unroll,
        "slice_us": float(s.slice) if s.slice is not None else 0.0,
        **loops,
        "macro_tiles": c["macro_tiles"],
        "micro_tiles": c["micro_tiles"],
        "micro_per_macro": c["micro_per_macro"],
        "nonempty_micro_tiles": c["nonempty_micro_tiles"],
        "empty_micro_tiles": c["micro_tiles"] - c["nonempty_micro_tiles"],
        "guarded_tiles": guarded,
        "tile_efficiency": round(out_elems / (c["micro_tiles"] * micro_outputs), 6),
        "yield_checks": c["micro_tiles"],
        "macs": op.macs,
        "reduction_size": red,
        "output_size": out_elems,
        "macs_per_macro_tile": macro_outputs * red,
        "macs_per_micro_tile": micro_outputs * red,
        "macs_per_yield_check": round(op.macs / c["micro_tiles"], 3),
        "bytes_per_macro_tile": sum(macro_b.values()),
        "bytes_in_per_macro_tile": macro_b["in"],
        "bytes_w_per_macro_tile": macro_b["w"],
        "bytes_out_per_macro_tile": macro_b["out"],
        "bytes_per_micro_tile": sum(micro_b.values()),
        "bytes_in_per_micro_tile": micro_b["in"],
        "bytes_w_per_micro_tile": micro_b["w"],
        "bytes_out_per_micro_tile": micro_b["out"],
        "accumulators": accumulators,
        "unrolled_body_stmts": body_stmts,
        "unrolled_body_macs": s.unroll,
        "inner_loop_trips": op.macs // s.unroll,
        "data_bytes": data_bytes,
        "weight_bytes": weight_bytes,
        "output_bytes": out_elems * osz,
        "flash_data_bytes": data_bytes + weight_bytes,
        "ram_data_bytes": out_elems * osz,
    }
    form = s.form if s.form is not None else FORM_DIRECT
    for i, name in enumerate(FORM_NAMES):
        f[f"form_{name}"] = int(form == i)
    f["pixel_block"] = s.pixel_block or 1
    f["reduction_unroll"] = s.reduction_unroll or 1
    # MACs per load in the unrolled body: an input load feeds the block's channels, a
    # weight load its pixels (the direct form: unroll channels per input load)
    f["macs_per_load"] = round(accumulators / max(1, (block if conv else 1)
                                                   + (s.unroll if conv else block)), 6)
    return f


def feature_names() -> list[str]:
    """The feature names in order (same for every operator)."""
    op = OperatorSpec("dense", "int8", (1, 4), units=4)
    return list(features(op, ScheduleParams(4, 2, 1)))
