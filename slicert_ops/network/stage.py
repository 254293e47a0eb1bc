"""The pipeline's build and run stages for network candidates (``network``, ``network_task``).

:func:`build_network_candidate` is ``pipeline.build`` for a network candidate: it rebuilds the
checked network (cached per process), generates the kernels and links the firmware (the
whole network, or one task's layer alone). Its :class:`NetworkFirmware` is measured by
``pipeline.run`` like an operator's: QEMU under the cycle plugin, the output checked against
the numpy int8 reference (the first wrong layer named), and the run folder's documents from
:func:`network_artifacts` (per-layer metrics in ``qemu_trace.json["layers"]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slicert_ops.errors import StageError
from slicert_ops.rundir import dumps
from slicert_ops.stages import CandidateBuild, Measurement, board_of, runtime_options

from .candidates import (
    NETWORK_TASK,
    load_context,
    schedules_of,
    task_feature_row,
    task_schedule,
)
from .features import LAYER_FEATURES_VERSION
from .firmware import (
    NetworkBuild,
    build_network_firmware,
    network_artifacts,
    network_tvm_config,
    run_network,
    task_firmware,
)
from .tasks import micro_tiles

if TYPE_CHECKING:
    from slicert_ops.manifest.candidate import Candidate


@dataclass
class NetworkFirmware:
    """A built network (or one task's layer) that ``pipeline.run`` measures per repeat."""

    nb: NetworkBuild

    def measure(self, cand: Candidate, repeat: int, sim_dir: Path) -> Measurement:
        r = cand.runner
        t = time.perf_counter()
        run = run_network(self.nb, sim_dir, seed=repeat, timeout_s=r["timeout_s"],
                          deadline_us=r["rt_deadline_us"], ws=r["flash_wait_states"])
        docs = network_artifacts(self.nb, run, candidate_id=cand.id, repeat=repeat,
                                 seed=repeat)
        # QEMU's own wall time, the numpy reference, and parse: the plugin file, the
        # network's and per-layer metrics and the trace
        ref = run.seconds.get("reference", 0.0)
        seconds = {"qemu": run.sim.wall_s, "reference": ref,
                   "parse": time.perf_counter() - t - run.sim.wall_s - ref}
        return Measurement(run.sim, docs["qemu_trace.json"], docs["cycles"], run.correct,
                           run.mismatch or "", seconds=seconds)


def build_network_candidate(cand: Candidate, work: Path, timings: dict[str, float]
                            ) -> CandidateBuild:
    t = time.perf_counter()
    board = board_of(cand)
    ctx = load_context(cand.network or {}, board)
    out = work / "build"
    try:
        if cand.operator["type"] == NETWORK_TASK:
            task = ctx.task(cand.operator["task"])
            sched = task_schedule(cand.schedule)
            nb = task_firmware(ctx.net, task, out, schedule=sched,
                               runtime_options=runtime_options(cand), board=board)
            features = task_feature_row(task, sched)
        else:
            nb = build_network_firmware(ctx.net, out, tasks=ctx.tasks,
                                        schedules=schedules_of(ctx, cand.schedule),
                                        runtime_options=runtime_options(cand), board=board)
            features = None
    except StageError:
        raise
    except Exception as exc:  # TVM and the network package raise their own types
        raise StageError("codegen", f"{type(exc).__name__}: {exc}") from exc
    timings.update(nb.seconds)
    timings["prepare"] = time.perf_counter() - t - sum(nb.seconds.values())
    return CandidateBuild(cand, work, NetworkFirmware(nb),
                          tvm_config_text=dumps(_tvm_config(nb, features)),
                          build_log_text=nb.build.log_path.read_text())


def _tvm_config(nb: NetworkBuild, features: dict[str, float] | None) -> dict[str, Any]:
    """Per task: signature, schedule, prototype, schedule trace; ``features``: a task
    candidate's (``task_feature_row``: nf5 + micro_tiles, what the cost model learns from);
    for a whole network the yield checks its schedules make (validation compares the
    trace)."""
    out = network_tvm_config(nb)
    if features is not None:
        out["features_version"] = LAYER_FEATURES_VERSION
        out["features"] = features
    else:
        out["features"] = {"micro_tiles": sum(micro_tiles(t, nb.kernels[t.key].schedule)
                                              * t.weight for t in nb.tasks)}
    return out
