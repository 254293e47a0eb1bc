"""Measurers: the pipeline (real), a replay table (bench), a function (unit tests).

:class:`PipelineMeasurer` runs ``pipeline.run_candidate`` -- codegen, firmware build, QEMU
per repeat, run folder -- exactly as ``sweep.run_sweep`` does, but keeps its worker
processes alive across the rounds of a search (a spawned worker spends seconds importing
TVM; a sweep pays that once, a search with a pool per round would pay it every round).
Run sinks (validation/tracking) and the progress bar are called per run as in a sweep.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.search.base import Measurer, MeasureResult
from slicert_ops.search.objective import aggregate_repeats


def result_from_outcomes(cand_id: str, outcomes: Sequence[Any]) -> MeasureResult:
    """One MeasureResult from the RunOutcomes of a candidate's repeats."""
    failed = [o for o in outcomes if o.status != "ok"]
    metrics = aggregate_repeats([o.metrics for o in outcomes if o.status == "ok"])
    return MeasureResult(
        candidate_id=cand_id, status="failed" if failed or not outcomes else "ok",
        metrics=metrics, reused=bool(outcomes) and all(o.reused for o in outcomes),
        error=failed[0].error if failed else None,
        runs=tuple(o.number for o in outcomes))


class PipelineMeasurer(Measurer):
    def __init__(self, exp: Experiment, out_root: Path, *, jobs: int = 1,
                 sinks: Iterable[Callable[[Any, Path], None]] = (), progress: Any = None,
                 cost_model: dict[str, Any] | None = None) -> None:
        from slicert_ops.pipeline import SweepContext
        from slicert_ops.rundir import clean_stale_tmp, dumps

        self.exp_dir = Path(out_root) / exp.name
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(self.exp_dir)
        (self.exp_dir / "experiment.json").write_text(dumps(exp.to_dict()))
        self.ctx = SweepContext(experiment=exp.name, exp_dir=self.exp_dir, repeat=exp.repeat,
                                logging=dict(exp.logging), manifest_file=exp.source,
                                cost_model=cost_model)
        self.jobs, self.sinks, self.progress = jobs, list(sinks), progress
        self.pool: ProcessPoolExecutor | None = None
        self.outcomes: list[Any] = []  # every RunOutcome (for the end-of-run summary)

    def measure(self, cands: Sequence[Candidate]) -> list[MeasureResult]:
        from slicert_ops.pipeline import run_candidate

        by_id: dict[str, list[Any]] = {}
        if self.jobs <= 1 or len(cands) <= 1:
            for cand in cands:
                by_id[cand.id] = self._collect(run_candidate(cand, self.ctx))
        else:
            pool = self._pool()
            pending: set[Future[list[Any]]] = {pool.submit(run_candidate, c, self.ctx)
                                               for c in cands}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    outs = self._collect(fut.result())
                    if outs:
                        by_id[outs[0].candidate_id] = outs
        return [result_from_outcomes(c.id, by_id.get(c.id, [])) for c in cands]

    def _collect(self, outcomes: list[Any]) -> list[Any]:
        for o in outcomes:
            self.outcomes.append(o)
            run_dir = self.exp_dir / f"run_{o.number:04d}"
            for sink in self.sinks:
                sink(o, run_dir)
            if self.progress is not None:
                self.progress.update(ok=o.status == "ok", failed=o.status != "ok",
                                     reused=o.reused)
            if o.status != "ok" and self.progress is not None and self.progress.enabled:
                print(f"\n  run_{o.number:04d} failed: {o.error}", file=sys.stderr)
        return outcomes

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            from slicert_ops.sweep import _warm_worker

            # spawn: TVM's thread pool does not survive fork; workers import the stages once.
            mp = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp,
                                            initializer=_warm_worker)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class ReplayMeasurer(Measurer):
    """Answers from a table {candidate id: MeasureResult} (the bench's exhaustive cache)."""

    def __init__(self, table: Mapping[str, MeasureResult]) -> None:
        self.table = table
        self.calls = 0

    def measure(self, cands: Sequence[Candidate]) -> list[MeasureResult]:
        self.calls += len(cands)
        out = []
        for c in cands:
            res = self.table.get(c.id)
            out.append(res if res is not None else
                       MeasureResult(c.id, "failed", error="not in the replay table"))
        return out


class FunctionMeasurer(Measurer):
    """``fn(candidate) -> metrics dict`` (or raises): a fake measurer for unit tests."""

    def __init__(self, fn: Callable[[Candidate], Mapping[str, Any]]) -> None:
        self.fn = fn
        self.measured: list[str] = []

    def measure(self, cands: Sequence[Candidate]) -> list[MeasureResult]:
        out = []
        for c in cands:
            self.measured.append(c.id)
            try:
                out.append(MeasureResult(c.id, "ok", dict(self.fn(c))))
            except Exception as exc:  # noqa: BLE001
                out.append(MeasureResult(c.id, "failed", error=str(exc)))
        return out
