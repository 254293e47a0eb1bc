"""What the build and run stages hand each other (types only; no stage imports).

``pipeline.build(candidate) -> CandidateBuild`` and ``pipeline.run(build, repeat, ctx) ->
RunOutcome``; each candidate kind (an operator: ``pipeline.OperatorFirmware``; a network:
``network.stage.NetworkFirmware``) provides a :class:`Firmware` that measures one repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from slicert_ops.manifest.candidate import Candidate

if TYPE_CHECKING:
    from slicert_ops.sim.qemu import SimResult

# Calibration yield checks the harness runs before the kernel (cost of one check).
CAL_CHECKS = 64


def runtime_options(cand: Candidate) -> Any:
    from slicert_ops.firmware.options import RuntimeOptions

    r = cand.runner
    return RuntimeOptions(
        slice_us=cand.schedule["slice"],
        irq_load=bool(r["simulate_irq_load"]),
        irq_period_us=r["irq_period_us"],
        irq_jitter_us=r["irq_jitter_us"],
        rt_work_iters=r["rt_work_iters"],
        rt_deadline_us=r["rt_deadline_us"],
        cal_checks=CAL_CHECKS,
        cpu_mhz=r["cpu_mhz"],
    )


def board_of(cand: Candidate) -> str:
    """runner.board (manifests written before the field existed: lm3s6965evb)."""
    return str(cand.runner.get("board") or "lm3s6965evb")


@dataclass
class Measurement:
    """One QEMU run of a firmware, checked and turned into the contract's documents."""

    sim: SimResult
    trace: dict[str, Any]       # qemu_trace.json (schema slicert-trace/1)
    metrics: dict[str, Any]     # the contract's metrics (cycles.txt)
    correct: bool
    mismatch: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # host time split, e.g. qemu


class Firmware(Protocol):
    """A built firmware that can be measured: one per candidate kind (operator, network)."""

    def measure(self, cand: Candidate, repeat: int, sim_dir: Path) -> Measurement: ...


@dataclass
class CandidateBuild:
    """The build stage's result, the run stage's input: codegen + firmware of one candidate
    (run any number of repeats), with the documents every run folder repeats."""

    candidate: Candidate
    work: Path                  # scratch folder (QEMU output of each repeat goes below it)
    firmware: Firmware
    tvm_config_text: str        # serialized once, written into every repeat's folder
    build_log_text: str


