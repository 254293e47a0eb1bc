"""Expand a validated Experiment into candidates with content-hashed ids."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Any

from slicert_ops.errors import InputError
from slicert_ops.manifest.candidate import (  # noqa: F401 - re-exported
    NON_MEASURING_RUNNER_FIELDS,
    Candidate,
    candidate_id,
)
from slicert_ops.manifest.load import Experiment

# lm3s6965evb memory, and what the runtime itself needs (stacks, runtime state, code).
BOARD_MEMORY = {"lm3s6965evb": {"flash": 256 * 1024, "ram": 64 * 1024},
                "mps2-an385": {"flash": 4 * 1024 * 1024, "ram": 4 * 1024 * 1024},
                "mps2-an386": {"flash": 4 * 1024 * 1024, "ram": 4 * 1024 * 1024}}
RUNTIME_RAM_RESERVE = 6 * 1024
RUNTIME_FLASH_RESERVE = 24 * 1024


@dataclass(frozen=True)
class Expansion:
    candidates: list[Candidate]
    skipped: list[str]  # impossible combinations left out: "tile_size=8, ...: reason; ..."

    def skipped_by_reason(self) -> dict[str, list[str]]:
        """The skipped combinations grouped by the kind of their reasons (the reason text
        without its values, e.g. "micro_tile: N does not divide tile_size N"), in order."""
        groups: dict[str, list[str]] = {}
        for line in self.skipped:
            reasons = line.split(": ", 1)[1] if ": " in line else line
            groups.setdefault(reason_kind(reasons), []).append(line)
        return groups


def reason_kind(reasons: str) -> str:
    """What check_schedule messages say, without their numbers and valid-range details
    ("micro_tile: N does not divide tile_size N"); each message starts with its field."""
    kinds = [re.sub(r"\d+", "N", part.split(" (", 1)[0]).rstrip(" ,:")
             for part in reasons.split("; ") if re.match(r"[a-z_]+: ", part)]
    return " + ".join(dict.fromkeys(kinds)) or reasons


def expand(exp: Experiment, versions: dict[str, str] | None = None) -> Expansion:
    """All candidates of the grid, in a fixed order; impossible ones are rejected or skipped.

    A parameter value that no combination can use is an error (exit 2, nothing runs); a
    combination that is impossible only together (e.g. micro_tile > tile_size) is skipped
    and reported.
    """
    from slicert_ops.codegen.spec import (  # TVM-free value types and rules
        ScheduleParams,
        check_schedule,
        default_form,
        default_micro_tile,
    )

    if versions is None:
        from slicert_ops.versions import toolchain_versions
        versions = toolchain_versions(exp.runner.get("board"))
    if exp.is_network:
        from slicert_ops.network.candidates import expand_network

        return Expansion(candidates=expand_network(exp, versions), skipped=[])
    op = operator_spec(exp)
    check_memory(exp, op)
    params = exp.parameters
    micro_values: list[int | None] = list(params["micro_tile"] or [None])
    # the kernel-form axes: None = the generator's default form for each schedule
    forms: list[int | None] = list(params.get("form") or [None])
    blocks: list[int | None] = list(params.get("pixel_block") or [None])
    red_unrolls: list[int | None] = list(params.get("reduction_unroll") or [None])
    combos = itertools.product(params["tile_size"], micro_values, params["unroll"],
                               params["slice"], forms, blocks, red_unrolls)
    candidates: list[Candidate] = []
    skipped: list[str] = []
    reasons_by_value: dict[tuple[str, int], list[str]] = {}
    used_values: set[tuple[str, int]] = set()
    seen: set[str] = set()
    for tile, micro, unroll, slice_us, form, block, red_unroll in combos:
        micro_eff = micro if micro is not None else default_micro_tile(op, tile)
        sched = ScheduleParams(tile_size=tile, micro_tile=micro_eff, unroll=unroll,
                               slice=slice_us, form=form, pixel_block=block,
                               reduction_unroll=red_unroll)
        given = sched   # the skipped list names what the manifest gave
        if form is None:
            sched = replace(sched, form=default_form(op, sched))
        reasons = check_schedule(op, sched)
        named: dict[str, Any] = {"tile_size": tile, "unroll": unroll, "slice": slice_us}
        for key, value in (("micro_tile", micro), ("form", form), ("pixel_block", block),
                           ("reduction_unroll", red_unroll)):
            if value is not None:
                named[key] = value
        if reasons:
            label = ", ".join(f"{k}={v}" for k, v in given.to_dict().items())
            line = f"{label}: {'; '.join(reasons)}"
            if line not in skipped:
                skipped.append(line)
            for key, value in named.items():
                reasons_by_value.setdefault((key, value), []).extend(reasons)
            continue
        used_values.update(named.items())
        # the resolved form, register block and reduction unroll are part of the candidate
        schedule = sched.resolved(op).to_dict()
        cid = candidate_id(op.to_dict(), schedule, exp.runner, versions)
        if cid in seen:   # e.g. a direct-form fallback reached from two form values
            continue
        seen.add(cid)
        candidates.append(Candidate(index=len(candidates), id=cid, operator=op.to_dict(),
                                    schedule=schedule, runner=dict(exp.runner),
                                    versions=dict(versions)))
    never = sorted({kv for kv in reasons_by_value if kv not in used_values})
    if never or not candidates:
        lines = []
        for key, value in never:
            why = sorted(set(reasons_by_value[(key, value)]))
            lines.append(f"experiment.parameters.{key}: value {value} fits no schedule: "
                         + "; ".join(why))
        if not candidates and not lines:
            lines = skipped[:5]
        raise InputError("impossible schedules for operator "
                         f"{_op_label(op)}:\n  - " + "\n  - ".join(lines),
                         file=exp.source,
                         fix="remove these values from the parameter lists")
    return Expansion(candidates=candidates, skipped=skipped)


def operator_spec(exp: Experiment) -> Any:
    from slicert_ops.codegen.spec import check_operator

    try:
        op = operator_spec_from_dict(exp.operator)
        problems = check_operator(op)
    except ValueError as exc:
        problems = [str(exc)]
    if problems:
        raise InputError("impossible operator:\n  - " + "\n  - ".join(
            f"experiment.operator.{p}" for p in problems), file=exp.source)
    return op


def operator_spec_from_dict(o: dict[str, Any]) -> Any:
    """The codegen OperatorSpec of a normalized operator mapping."""
    from slicert_ops.codegen.spec import OperatorSpec

    if o["type"] == "conv2d":
        return OperatorSpec(type="conv2d", dtype=o["dtype"], input=tuple(o["input"]),
                            kernel=tuple(o["kernel"]), out_channels=o["out_channels"],
                            stride=o["stride"], padding=o["padding"])
    return OperatorSpec(type="dense", dtype=o["dtype"], input=tuple(o["input"]),
                        units=o["units"])


def check_memory(exp: Experiment, op: Any) -> None:
    """Reject operators whose data cannot fit the board before anything is built."""
    from slicert_ops.codegen.spec import footprint

    mem = BOARD_MEMORY[exp.runner["board"]]
    fp = footprint(op)
    ram_free = mem["ram"] - RUNTIME_RAM_RESERVE
    flash_free = mem["flash"] - RUNTIME_FLASH_RESERVE
    if fp["ram_data_bytes"] > ram_free:
        raise InputError(
            f"the output tensor needs {fp['ram_data_bytes']} bytes of RAM but "
            f"{exp.runner['board']} has {mem['ram']} bytes ({ram_free} after the runtime's "
            "stacks and state)", file=exp.source, field="experiment.operator",
            fix="make the input smaller or use fewer output channels/units")
    if fp["flash_data_bytes"] > flash_free:
        raise InputError(
            f"inputs and weights need {fp['flash_data_bytes']} bytes of flash but "
            f"{exp.runner['board']} has {mem['flash']} bytes ({flash_free} after code)",
            file=exp.source, field="experiment.operator",
            fix="make the input or the weights smaller")


def _op_label(op: Any) -> str:
    d = op.to_dict()
    return " ".join(f"{k}={v}" for k, v in d.items())
