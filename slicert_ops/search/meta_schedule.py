"""``strategy: meta_schedule``: TVM's own tuner over the schedules TVM generates itself.

TVM's evolutionary search and its XGBoost model (``tvm.s_tir.meta_schedule``) drive; we
provide the two halves TVM measures with, made of the pipeline's stages:

- :class:`SlicertBuilder` (a ``PyBuilder``): picks the micro-tile loop of the
  TVM-generated schedule (below), lowers it to plain C with our pipeline
  (``codegen.lowering``: yield check inserted there, unpacked calling convention, no TVM
  runtime) and links the firmware (``firmware.build_firmware``).
- :class:`SlicertRunner` (a ``PyRunner``): runs every repeat in QEMU with the cycle plugin
  and writes the run folders exactly as the pipeline does (``pipeline.run``:
  output checked against numpy, trace, metrics, cycles.txt). TVM receives the objective as
  ``run_secs`` (kernel cycles at 50 MHz); an infeasible candidate (breaks a bound of the
  objective) gets a tenfold penalty so that TVM's model learns to avoid it, and is never
  reported as the best.

The space: TVM's CPU rules on the Cortex-M3 LLVM target (``thumbv7m-none-eabi``), minus
what an MCU kernel cannot use: multi-level tiling ``SSRSRS`` with a ``global`` write cache,
explicit unrolling (0/16/64/512 steps), random compute location; no parallel and no
vectorize. Mutators: tile sizes, unroll, compute location.

**What the micro-tile is for a TVM-generated schedule.** The yield check goes at the end of
the body of the *innermost loop with extent > 1 among the loops enclosing the reduction
block that lie outside every reduction loop*: one iteration of it computes a set of outputs
to completion (all of their reduction), which is what our own schedules call a micro-tile.
When no such loop has extent > 1 (the whole output is one tile), the outermost loop with
extent > 1 of the nest is used (the granule is then a part of the reduction; preemption is
still exact, the kernel's state is preserved). The loop, its extent and the number of yield
checks are recorded in the run's ``tvm_config.json`` and schedule.

Budget and resume: ``max_trials_global = budget``; each TVM trial is one candidate. Every
measured candidate has a content id (the generated C, operator, runner options and
toolchain versions); a re-run finds it in the run folders and replays it without running
QEMU (the TVM search is seeded and single-threaded, so it proposes the same sequence).
Trial run folders are numbered from :data:`INDEX_BASE` so that they never collide with the
grid candidates of the same experiment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.search.base import MeasureResult, Trial
from slicert_ops.search.database import RunFolderDatabase
from slicert_ops.search.objective import CYCLES_PER_US, Objective, aggregate_repeats

log = logging.getLogger("slicert.search")

INDEX_BASE = 10000  # candidate index of trial 1 (run folders run_10001.. for repeat 1)
ENTRY = "slicert_kernel"
MS_TARGET: dict[str, Any] = {"kind": "llvm", "mtriple": "thumbv7m-none-eabi",
                             "mcpu": "cortex-m3", "num-cores": 1}
INFEASIBLE_PENALTY = 10.0
SECONDS_PER_CYCLE = 1.0 / (CYCLES_PER_US * 1e6)


# --------------------------------------------------------------------------------------------
# The space TVM searches
# --------------------------------------------------------------------------------------------
def space_generator() -> Any:
    from tvm.s_tir import meta_schedule as ms

    rules = [
        ms.schedule_rule.MultiLevelTiling(
            structure="SSRSRS", tile_binds=None, max_innermost_factor=16,
            vector_load_lens=None, reuse_read=None,
            reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global")),
        ms.schedule_rule.ParallelizeVectorizeUnroll(
            max_jobs_per_core=-1, max_vectorize_extent=-1, unroll_max_steps=[0, 16, 64, 512],
            unroll_explicit=True),
        ms.schedule_rule.RandomComputeLocation(),
    ]
    postprocs = [ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll(),
                 ms.postproc.RewriteReductionBlock(), stack_limit_postproc()]
    mutators = {ms.mutator.MutateTileSize(): 0.9, ms.mutator.MutateUnroll(): 0.08,
                ms.mutator.MutateComputeLocation(): 0.05}
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs,
                                             mutator_probs=mutators)


STACK_ALLOC_LIMIT = 1024  # bytes: above this TVM's C lowering calls TVMBackendAllocWorkspace


def write_cache_bytes(mod: Any) -> int:
    """Bytes of the largest write cache once compacted to its compute-at tile: the product of
    the extents of the cache block's own loops (those not shared with the reduction block)
    times the element size. 0 when the schedule has no write cache."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlockRealize

    func = mod["main"]
    params = {p.name for p in func.params}
    blocks: list[tuple[Any, list[Any]]] = []

    def walk(stmt: Any, loops: list[Any]) -> None:
        if isinstance(stmt, tirx.For):
            walk(stmt.body, [*loops, stmt])
        elif isinstance(stmt, SBlockRealize):
            blocks.append((stmt.block, loops))
            walk(stmt.block.body, loops)
        elif isinstance(stmt, tirx.SeqStmt):
            for x in stmt.seq:
                walk(x, loops)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, loops)
            if stmt.else_case is not None:
                walk(stmt.else_case, loops)
        elif getattr(stmt, "body", None) is not None:
            walk(stmt.body, loops)

    walk(func.body, [])
    reduce_loops = next((loops for blk, loops in blocks
                         if any(int(iv.iter_type) == 2 for iv in blk.iter_vars)), [])
    shared = {id(f.loop_var) for f in reduce_loops} | {f.loop_var.name for f in reduce_loops}
    worst = 0
    for blk, loops in blocks:
        writes = {_region_buffer(w).name for w in blk.writes}
        reads = [_region_buffer(r) for r in blk.reads
                 if _region_buffer(r).name not in params]
        if not (writes & params) or not reads or any(int(iv.iter_type) == 2
                                                     for iv in blk.iter_vars):
            continue
        own = [f for f in loops if f.loop_var.name not in shared]
        elems = math.prod(_extent(f) for f in own)
        bits = re.search(r"(\d+)$", str(reads[0].dtype))
        itemsize = max(1, int(bits.group(1)) // 8) if bits else 4
        worst = max(worst, elems * itemsize)
    return worst


def _region_buffer(region: Any) -> Any:
    """The buffer of a block read/write region (``.buffer`` or, in this TVM, ``.source``)."""
    return getattr(region, "buffer", None) or region.source


def stack_limit_postproc() -> Any:
    """Rejects schedules whose write cache would not fit a stack array (so TVM resamples
    instead of spending a trial on a kernel that needs the TVM runtime's allocator)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class StackLimit(ms.postproc.PyPostproc):
        def _initialize_with_tune_context(self, context: Any) -> None:
            return None

        def apply(self, sch: Any) -> bool:
            try:
                return write_cache_bytes(sch.mod) < STACK_ALLOC_LIMIT
            except Exception:  # noqa: BLE001 - unknown shape: let the builder decide
                return True

        def clone(self) -> Any:
            return StackLimit()

    return StackLimit()


# --------------------------------------------------------------------------------------------
# Micro-tile loop and lowering to plain C
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YieldLoop:
    name: str
    extent: int
    checks: int            # yield checks per kernel call (product of extents down to it)
    outputs: int           # output elements per micro-tile (spatial extents inside it)
    partial: bool          # True when the granule is a part of the reduction (fallback)


def _walk(stmt: Any, loops: list[Any], found: list[Any]) -> None:
    from tvm import tirx
    from tvm.s_tir.stmt import SBlockRealize

    if isinstance(stmt, tirx.For):
        _walk(stmt.body, [*loops, stmt], found)
    elif isinstance(stmt, SBlockRealize):
        blk = stmt.block
        if any(int(iv.iter_type) == 2 for iv in blk.iter_vars):  # CommReduce
            found.append((blk, stmt, list(loops)))
        _walk(blk.body, loops, found)
    elif isinstance(stmt, tirx.SeqStmt):
        for s in stmt.seq:
            _walk(s, loops, found)
    elif isinstance(stmt, tirx.IfThenElse):
        _walk(stmt.then_case, loops, found)
        if stmt.else_case is not None:
            _walk(stmt.else_case, loops, found)
    elif getattr(stmt, "body", None) is not None:
        _walk(stmt.body, loops, found)


def _extent(loop: Any) -> int:
    try:
        return int(loop.extent)
    except (TypeError, ValueError):
        return 2  # symbolic: certainly not a single iteration


def choose_yield_loop(sch: Any) -> tuple[Any, YieldLoop]:
    """(LoopRV, description) of the micro-tile loop of a scheduled operator (module doc)."""
    from tvm import tirx

    found: list[Any] = []
    _walk(sch.mod["main"].body, [], found)
    if len(found) != 1:
        raise RuntimeError(f"expected one reduction block, found "
                           f"{[b.name_hint for b, _, _ in found]}")
    blk, realize, fors = found[0]
    reduce_vars: set[str] = set()
    spatial_vars: set[str] = set()
    for iv, value in zip(blk.iter_vars, realize.iter_values, strict=True):
        names = {v.name for v in tirx.analysis.undefined_vars(value)}
        (reduce_vars if int(iv.iter_type) == 2 else spatial_vars).update(names)
    prefix = []
    for f in fors:
        if f.loop_var.name in reduce_vars:
            break
        prefix.append(f)
    outer = [f for f in prefix if _extent(f) > 1]
    if outer:
        chosen, partial = outer[-1], False
    else:
        many = [f for f in fors if _extent(f) > 1]
        if not many:
            raise RuntimeError("the schedule has no loop with more than one iteration")
        chosen, partial = many[0], True
    pos = next(i for i, f in enumerate(fors) if f.same_as(chosen))
    checks = math.prod(_extent(f) for f in fors[:pos + 1])
    outputs = math.prod(_extent(f) for f in fors[pos + 1:] if f.loop_var.name in spatial_vars
                        and f.loop_var.name not in reduce_vars)
    loops = sch.get_loops(sch.get_sblock(blk.name_hint))
    for rv in loops:
        if sch.get(rv).same_as(chosen):
            return rv, YieldLoop(chosen.loop_var.name, _extent(chosen), checks, outputs,
                                 partial)
    raise RuntimeError(f"loop {chosen.loop_var.name} not found in the schedule")


def kernel_from_schedule(op: Any, sch: Any, entry: str = ENTRY) -> tuple[Any, YieldLoop]:
    """KernelSource of a TVM-generated schedule: yield loop annotated, plain C via
    ``codegen.lowering``'s pipeline (as ``generate_kernel`` does for our schedules)."""
    import tvm

    from slicert_ops.codegen import lowering as lower_c
    from slicert_ops.codegen.lowering import YIELD_ANNOTATION
    from slicert_ops.codegen.spec import CTYPE, KernelSource

    sch = sch.copy()
    rv, yl = choose_yield_loop(sch)
    sch.annotate(rv, YIELD_ANNOTATION, 1)
    head = (f"/* {entry}: TVM meta_schedule schedule, lowered by slicert_ops.search."
            f"meta_schedule with TVM {tvm.__version__}; do not edit.\n"
            f" * micro-tile loop {yl.name} (extent {yl.extent}): {yl.checks} yield checks, "
            f"{yl.outputs} outputs per micro-tile */")
    c_source = lower_c.to_plain_c(lower_c.build_c(sch.mod["main"], entry), head)
    if lower_c.YIELD_FUNC + "()" not in c_source:
        raise RuntimeError("the yield check did not survive lowering")
    args = (("data", CTYPE[op.dtype], tuple(op.input_shapes[0])),
            ("weight", CTYPE[op.dtype], tuple(op.input_shapes[1])),
            ("out", CTYPE[op.output_dtype], tuple(op.output_shape)))
    trace = sch.trace
    tvm_config = {
        "tvm_version": tvm.__version__, "operator": op.to_dict(), "entry": entry,
        "source": "meta_schedule", "target": MS_TARGET,
        "schedule_trace": "\n".join(trace.as_python()),  # ours (the yield annotation);
        # TVM's own decisions: search/meta_schedule_traces.jsonl (by candidate id)
        "lowering": lower_c.lowering_options(),
        "tir_script": sch.mod.script(),
        "micro_tile": {"loop": yl.name, "extent": yl.extent, "yield_checks": yl.checks,
                       "outputs": yl.outputs, "partial_reduction": yl.partial,
                       "rule": "innermost loop with extent > 1 outside every reduction loop "
                               "of the reduction block"},
        "micro_tiles": yl.checks,
        "features": {"ms_yield_checks": yl.checks, "ms_outputs_per_micro_tile": yl.outputs,
                     "macs": op.macs},
    }
    kernel = KernelSource(c_source=c_source, entry=entry, args=args, micro_tiles=yl.checks,
                          macro_tiles=1, tvm_config=tvm_config)
    return kernel, yl


# --------------------------------------------------------------------------------------------
# Shared state of one tuning session: builder -> runner hand-over, trials
# --------------------------------------------------------------------------------------------
@dataclass
class _Built:
    cand: Candidate
    prepared: Any | None          # pipeline.CandidateBuild (None when replayed)
    work: Path
    replay: MeasureResult | None


class Session:
    """What the builder and the runner share: the experiment, the trial log, the folders."""

    def __init__(self, exp: Experiment, exp_dir: Path, objective: Objective, slice_us: int,
                 jobs: int, sinks: Iterable[Any], bar: Any) -> None:
        from slicert_ops.codegen import make_inputs, reference
        from slicert_ops.manifest.expand import operator_spec
        from slicert_ops.pipeline import SweepContext
        from slicert_ops.versions import toolchain_versions

        self.exp, self.exp_dir, self.objective = exp, exp_dir, objective
        self.slice_us, self.jobs, self.sinks, self.bar = slice_us, max(1, jobs), list(sinks), bar
        self.op = operator_spec(exp)
        self.inputs = make_inputs(self.op, seed=0)
        self.reference = reference(self.op, self.inputs)
        self.versions = toolchain_versions(exp.runner.get("board"))  # cm4-v1 on an386
        self.ctx = SweepContext(experiment=exp.name, exp_dir=exp_dir, repeat=exp.repeat,
                                logging=dict(exp.logging), manifest_file=exp.source)
        self.db = RunFolderDatabase(exp_dir, exp.repeat)
        self.known = _scan_runs(exp_dir)            # candidate id -> run dirs (ok runs)
        self.built: dict[str, _Built] = {}
        self.trials: list[Trial] = []
        self.build_failures = 0
        self.work_root: Path | None = None
        self.artifact_ids: dict[str, str] = {}
        self.traces_path = self.db.search_dir / "meta_schedule_traces.jsonl"
        self.traces_path.write_text("")

    def next_index(self) -> int:
        return INDEX_BASE + len(self.trials) + len(self.built)

    def candidate(self, kernel: Any, yl: YieldLoop, index: int) -> Candidate:
        from slicert_ops.manifest.expand import candidate_id

        schedule = {"slice": self.slice_us, "source": "meta_schedule",
                    "micro_tile_loop": yl.name, "yield_checks": yl.checks,
                    "micro_tile_outputs": yl.outputs,
                    "kernel_sha": hashlib.sha256(kernel.c_source.encode()).hexdigest()[:16]}
        cid = candidate_id(self.op.to_dict(), schedule, self.exp.runner, self.versions)
        return Candidate(index=index, id=cid, operator=self.op.to_dict(), schedule=schedule,
                         runner=dict(self.exp.runner), versions=dict(self.versions))

    def replay(self, cand: Candidate) -> MeasureResult | None:
        dirs = self.known.get(cand.id)
        if not dirs or len(dirs) < self.exp.repeat:
            return None
        runs, numbers = [], []
        for d in dirs[:self.exp.repeat]:
            try:
                runs.append(json.loads((d / "qemu_trace.json").read_text()).get("metrics", {}))
            except (OSError, ValueError):
                return None
            numbers.append(int(d.name.split("_")[1]))
        return MeasureResult(cand.id, "ok", aggregate_repeats(runs), reused=True,
                             runs=tuple(numbers))

    def record_failed_build(self, mod: Any, error: str) -> None:
        """A schedule TVM proposed that could not be built: a trial spent, nothing ran."""
        key = hashlib.sha256(str(mod).encode()).hexdigest()[:16]
        trial = Trial(number=len(self.trials) + 1, round=0, candidate_id=f"ms-{key}",
                      candidate_index=-1, schedule={"source": "meta_schedule"},
                      source="meta_schedule", status="failed", value=None, feasible=False,
                      violations=[], reused=False, error=error[:500])
        self.trials.append(trial)
        self.db.commit(trial)
        self.build_failures += 1
        if self.bar is not None:
            self.bar.update(failed=self.exp.repeat)

    def record(self, cand: Candidate, res: MeasureResult) -> Trial:
        ev = self.objective.evaluate(res.metrics) if res.ok else None
        trial = Trial(number=len(self.trials) + 1, round=0, candidate_id=cand.id,
                      candidate_index=cand.index, schedule=dict(cand.schedule),
                      source="meta_schedule", status=res.status,
                      value=ev.value if ev else None, feasible=bool(ev and ev.feasible),
                      violations=list(ev.violations) if ev else [], reused=res.reused,
                      error=res.error, runs=list(res.runs),
                      metrics={k: res.metrics[k] for k in
                               dict.fromkeys([*self.objective.metrics, "kernel_cycles",
                                              "max_preemption_latency_cycles",
                                              "yield_checks", "correct"])
                               if k in res.metrics})
        self.trials.append(trial)
        self.db.commit(trial)
        return trial


def _scan_runs(exp_dir: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for man_path in sorted(exp_dir.glob("run_*/manifest.json")):
        try:
            man = json.loads(man_path.read_text())
        except (OSError, ValueError):
            continue
        if man.get("status") == "ok" and (man_path.parent / "qemu_trace.json").is_file():
            out.setdefault(man["candidate_id"], []).append(man_path.parent)
    for dirs in out.values():
        dirs.sort()
    return out


# --------------------------------------------------------------------------------------------
# Builder and runner
# --------------------------------------------------------------------------------------------
def make_builder(session: Session) -> Any:
    from tvm.ir.utils import derived_object
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class SlicertBuilder(ms.builder.PyBuilder):
        """BuilderInput(mod) -> plain C kernel (yield per micro-tile) -> firmware ELF."""

        def build(self, build_inputs: list[Any]) -> list[Any]:
            from slicert_ops.firmware import build_firmware
            from slicert_ops.pipeline import operator_build, runtime_options

            jobs: list[tuple[int, Candidate, Any, Path]] = []
            results: list[Any] = [None] * len(build_inputs)
            for i, bi in enumerate(build_inputs):
                work = Path(tempfile.mkdtemp(prefix="slicert-ms-", dir=session.work_root))
                artifact = str(work / "artifact")
                try:
                    kernel, yl = kernel_from_schedule(session.op, Schedule(bi.mod))
                except Exception as exc:  # noqa: BLE001 - TVM raises its own types
                    shutil.rmtree(work, ignore_errors=True)
                    session.record_failed_build(bi.mod, f"lowering: {exc}")
                    results[i] = ms.builder.BuilderResult(None, f"lowering: {exc}"[:2000])
                    continue
                cand = session.candidate(kernel, yl, session.next_index())
                replay = session.replay(cand)
                session.built[artifact] = _Built(cand, None, work, replay)
                session.artifact_ids[artifact] = cand.id
                Path(artifact).write_text(cand.id)
                results[i] = ms.builder.BuilderResult(artifact, None)
                if replay is None:
                    jobs.append((i, cand, kernel, work))

            def link(job: tuple[int, Candidate, Any, Path]) -> tuple[int, Any]:
                i, cand, kernel, work = job
                try:
                    build = build_firmware(kernel, session.inputs, runtime_options(cand),
                                           work / "build")
                except Exception as exc:  # noqa: BLE001
                    return i, exc
                # no host timings in tvm_config.json: it must be byte-identical on re-runs
                return i, operator_build(cand, work, kernel, build, session.reference)

            with ThreadPoolExecutor(max_workers=session.jobs) as pool:
                for i, prep in pool.map(link, jobs):
                    artifact = results[i].artifact_path
                    if isinstance(prep, Exception):
                        built = session.built.pop(artifact)
                        shutil.rmtree(built.work, ignore_errors=True)
                        session.record_failed_build(build_inputs[i].mod, f"build: {prep}")
                        results[i] = ms.builder.BuilderResult(None, f"build: {prep}"[:2000])
                    else:
                        session.built[artifact].prepared = prep
            return results

    return SlicertBuilder()


def make_runner(session: Session) -> Any:
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class _Done(ms.runner.PyRunnerFuture):
        def __init__(self, result: Any) -> None:
            super().__init__()
            self._result = result

        def done(self) -> bool:
            return True

        def result(self) -> Any:
            return self._result

    @derived_object
    class SlicertRunner(ms.runner.PyRunner):
        """RunnerInput(artifact) -> every repeat in QEMU -> run folders -> run_secs."""

        def run(self, runner_inputs: list[Any]) -> list[Any]:
            from slicert_ops.pipeline import run as run_stage

            built = [session.built.pop(ri.artifact_path, None) for ri in runner_inputs]

            from slicert_ops.search.measure import result_from_outcomes

            def measure(b: _Built | None) -> list[Any] | None:
                if b is None or b.replay is not None:
                    return None
                # b.work (the ELF) is removed by TVM's RemoveBuildArtifact callback
                return [run_stage(b.prepared, r, session.ctx) for r in range(session.exp.repeat)]

            with ThreadPoolExecutor(max_workers=session.jobs) as pool:
                outcomes = list(pool.map(measure, built))
            measured: list[MeasureResult | None] = []
            for b, outs in zip(built, outcomes, strict=True):
                if outs is None:
                    measured.append(b.replay if b is not None else None)
                    continue
                for o in outs:  # sinks (validation, tracking) run here, in one thread
                    for sink in session.sinks:
                        sink(o, session.exp_dir / f"run_{o.number:04d}")
                measured.append(result_from_outcomes(b.cand.id, outs))
            futures = []
            for b, res in zip(built, measured, strict=True):
                if b is None or res is None:
                    futures.append(_Done(ms.runner.RunnerResult(None, "no build artifact")))
                    continue
                trial = session.record(b.cand, res)
                if session.bar is not None:
                    n = session.exp.repeat
                    session.bar.update(ok=n if res.ok else 0, failed=0 if res.ok else n,
                                       reused=n if res.reused else 0)
                if not res.ok:
                    futures.append(_Done(ms.runner.RunnerResult(None, res.error or "failed")))
                    continue
                cost = float(trial.value) * SECONDS_PER_CYCLE
                if not trial.feasible:
                    excess = _excess(session.objective, res.metrics)
                    cost *= INFEASIBLE_PENALTY * (1.0 + excess)
                futures.append(_Done(ms.runner.RunnerResult([cost], None)))
            return futures

    return SlicertRunner()


def make_trace_recorder(session: Session) -> Any:
    """A measure callback writing TVM's schedule trace (its decisions: tile sizes, unroll
    steps, compute locations) of every measured candidate to
    ``search/meta_schedule_traces.jsonl`` -- the builder only sees the scheduled module."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class TraceRecorder(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: list[Any],
                  builder_results: list[Any], runner_results: list[Any]) -> None:
            lines = []
            for mc, br in zip(measure_candidates, builder_results, strict=True):
                cid = session.artifact_ids.pop(br.artifact_path or "", None)
                if cid is not None:
                    lines.append(json.dumps({"candidate_id": cid, "trace": "\n".join(
                        mc.sch.trace.as_python())}))
            if lines:
                with open(session.traces_path, "a") as fh:
                    fh.write("\n".join(lines) + "\n")

    return TraceRecorder()


def _excess(objective: Objective, metrics: dict[str, Any]) -> float:
    worst = 0.0
    for b in objective.bounds:
        v = metrics.get(b.metric)
        if isinstance(v, int | float):
            worst = max(worst, v / max(b.limit, 1e-9) - 1.0)
    return worst


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _without_tensor_intrinsics() -> Iterator[None]:
    """``TuneContext()`` imports ``tvm.s_tir.tensor_intrin``, which parses ~250 TVMScript
    tensor intrinsics (CUDA, Hexagon, ARM dot products...) and takes ~25 s on this machine
    (``inspect.stack`` per function). Our space uses no tensorization, so while tuning that
    module is an empty stand-in (removed afterwards; a real import later is unaffected)."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name, "stand-in: no tensor intrinsics needed")
    try:
        yield
    finally:
        if getattr(sys.modules.get(name), "__doc__", "").startswith("stand-in"):
            del sys.modules[name]


def run_meta_schedule(exp: Experiment, out_root: Path, *, jobs: int = 1,
                      sinks: Iterable[Any] = (), progress: bool = True,
                      budget: int | None = None, seed: int | None = None,
                      trials_per_iter: int | None = None, population: int = 128) -> Any:
    """Tune exp's operator with TVM meta_schedule, measuring with our builder/runner."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from slicert_ops.codegen.operators import define
    from slicert_ops.progress import Progress
    from slicert_ops.rundir import clean_stale_tmp, dumps
    from slicert_ops.search.objective import cycles_per_us, parse_objective
    from slicert_ops.search.report import write_outputs
    from slicert_ops.search.tuner import SearchResult

    s = exp.search_spec
    budget = int(budget or s.budget or 16)
    seed = int(s.seed if seed is None else seed)
    objective = parse_objective(s.objective, cycles_per_us(exp))
    slices = exp.parameters.get("slice") or [64]
    if len(slices) > 1 and progress:
        print(f"  note: meta_schedule tunes the kernel for slice {slices[0]} us (the first "
              f"of {slices}); the slice does not change the code", file=sys.stderr)
    exp_dir = Path(out_root) / exp.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(exp_dir)
    (exp_dir / "experiment.json").write_text(dumps(exp.to_dict()))
    bar = Progress(budget * exp.repeat, f"{exp.name} (meta_schedule)", enabled=progress)
    session = Session(exp, exp_dir, objective, int(slices[0]), jobs, sinks, bar)
    per_iter = trials_per_iter or max(2, min(16, budget))
    t0 = time.perf_counter()
    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    old_level = ms_log.level
    ms_log.setLevel(logging.WARNING)
    work_dir = Path(tempfile.mkdtemp(prefix="slicert-ms-tune-"))
    session.work_root = work_dir
    # TVM's XGBModel answers with np.random (global state) until it has trained: seed it so
    # that a re-run proposes the same schedules (resume), and restore it afterwards.
    np_state = np.random.get_state()
    np.random.seed(seed)
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(_without_tensor_intrinsics())
        func = define(session.op)
        target = tvm.target.Target(MS_TARGET)
        ms.tune_tir(
            func, target, str(work_dir), max_trials_global=budget,
            num_trials_per_iter=per_iter, builder=make_builder(session),
            runner=make_runner(session), database="memory",
            cost_model=ms.cost_model.XGBModel(num_tuning_cores=1,
                                              num_warmup_samples=min(16, per_iter)),
            measure_callbacks=[ms.measure_callback.AddToDatabase(),
                               make_trace_recorder(session),
                               ms.measure_callback.RemoveBuildArtifact(),
                               ms.measure_callback.UpdateCostModel()],
            space=space_generator(),
            strategy=ms.search_strategy.EvolutionarySearch(population_size=population),
            num_tuning_cores=1, seed=seed)
    finally:
        stack.close()
        np.random.set_state(np_state)
        ms_log.setLevel(old_level)
        bar.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    result = SearchResult(strategy="meta_schedule", objective=objective, budget=budget,
                          space_size=0, trials=list(session.trials),
                          settings={"strategy": "meta_schedule", "seed": seed,
                                    "trials_per_iter": per_iter, "population": population,
                                    "target": MS_TARGET,
                                    "build_failures": session.build_failures},
                          elapsed_s=time.perf_counter() - t0, exp_dir=exp_dir,
                          experiment=exp.name, search_dir=session.db.search_dir)
    write_outputs(result, session.db.search_dir)
    return result
