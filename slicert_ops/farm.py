"""The local farm: candidates measured on worker processes, runs collected as they finish.

One place for what a sweep and a search both need: a spawn pool kept across calls (a worker
imports TVM once: seconds), the validation stage on every finished run (validation.json,
tracked or not), the other sinks (tracking), the progress bar and the failure lines.
``sweep.run_sweep`` measures once; ``search.measure.PipelineMeasurer`` once per round.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from slicert_ops import hosttime
from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.pipeline import RunOutcome, SweepContext, run_candidate
from slicert_ops.rundir import clean_stale_tmp, dumps, run_name, run_number
from slicert_ops.validate.stage import VERDICT_FILE, ValidationStage, Verdict

# Called in the parent for every finished run (validation + tracking hook in).
RunSink = Callable[[RunOutcome, Path], None]


def warm_worker() -> None:
    """Import the heavy stages once per worker process, not once per candidate."""
    import slicert_ops.codegen  # noqa: F401
    import slicert_ops.firmware  # noqa: F401
    import slicert_ops.sim.trace  # noqa: F401


class LocalFarm:
    """Measure candidates (every repeat) into out_root/<experiment>/run_NNNN/.

    A sink that is a ``ValidationStage`` (the tracking's, which forwards verdicts to MLflow)
    stands in for the farm's own one, which :meth:`close` waits for."""

    def __init__(self, exp: Experiment, out_root: Path, *, jobs: int = 1,
                 sinks: Iterable[RunSink] = (), progress: Any = None,
                 cost_model: dict[str, Any] | None = None) -> None:
        self.exp = exp
        self.exp_dir = Path(out_root) / exp.name
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        (self.exp_dir / "experiment.json").write_text(dumps(exp.to_dict()))
        self.ctx = SweepContext(experiment=exp.name, exp_dir=self.exp_dir, repeat=exp.repeat,
                                logging=dict(exp.logging), manifest_file=exp.source,
                                cost_model=cost_model)
        self.jobs, self.progress = jobs, progress
        self.sinks = list(sinks)
        stage = next((s for s in self.sinks if isinstance(s, ValidationStage)), None)
        self._own_stage = stage is None
        if stage is None:
            stage = ValidationStage()
            self.sinks.insert(0, stage)
        self.stage = stage
        self.outcomes: list[RunOutcome] = []
        self._pool: ProcessPoolExecutor | None = None
        self._warm = False

    def clean(self, cands: Sequence[Candidate] | None = None) -> None:
        """Remove partial run folders (of these candidates' runs; all when None)."""
        clean_stale_tmp(self.exp_dir, None if cands is None else self._numbers(cands))

    def _numbers(self, cands: Sequence[Candidate]) -> list[int]:
        return [run_number(c.index, r, self.exp.repeat) for c in cands
                for r in range(self.exp.repeat)]

    def measure(self, cands: Sequence[Candidate]) -> list[RunOutcome]:
        """Every repeat of ``cands``; the outcomes in completion order."""
        if not self._warm and any(not (self.exp_dir / run_name(n) / VERDICT_FILE).is_file()
                                  for n in self._numbers(cands)):
            self.stage.warm()  # GX loads in the validation process while runs measure
            self._warm = True
        got: list[RunOutcome] = []
        if self.jobs <= 1 or len(cands) <= 1:
            for cand in cands:
                got += self._collect(run_candidate(cand, self.ctx))
            return got
        pool = self._get_pool()
        pending: set[Future[list[RunOutcome]]] = {pool.submit(run_candidate, c, self.ctx)
                                                  for c in cands}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                got += self._collect(fut.result())
        return got

    def _collect(self, outcomes: list[RunOutcome]) -> list[RunOutcome]:
        for o in outcomes:
            self.outcomes.append(o)
            run_dir = self.exp_dir / run_name(o.number)
            for sink in self.sinks:
                sink(o, run_dir)
            if self.progress is not None:
                self.progress.update(ok=o.status == "ok", failed=o.status != "ok",
                                     reused=o.reused)
                if o.status != "ok" and self.progress.enabled:
                    print(f"\n  {run_name(o.number)} failed: {o.error}", file=sys.stderr)
        return outcomes

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: TVM's thread pool does not survive fork; workers import the stages once.
            mp = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp,
                                             initializer=warm_worker)
        return self._pool

    def close(self, wait_verdicts: bool = True) -> dict[Path, Verdict]:
        """Stop the workers; wait for the verdicts (not after an interruption)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._own_stage:
            with hosttime.stage("validation"):
                self.stage.close(wait=wait_verdicts)
        return dict(self.stage.verdicts)
