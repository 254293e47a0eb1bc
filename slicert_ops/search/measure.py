"""Measurers: the pipeline (real), a replay table (bench), a function (unit tests).

:class:`PipelineMeasurer` measures on the local farm (``farm.LocalFarm``) as a sweep does,
its worker processes kept alive across the rounds of a search (a spawned worker spends
seconds importing TVM). Validation, the sinks and the progress bar run per run as in a
sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
    """The real measurer: the local farm (farm.py), its workers kept across rounds."""

    def __init__(self, exp: Experiment, out_root: Path, *, jobs: int = 1,
                 sinks: Iterable[Callable[[Any, Path], None]] = (), progress: Any = None,
                 cost_model: dict[str, Any] | None = None) -> None:
        from slicert_ops.farm import LocalFarm

        self.farm = LocalFarm(exp, out_root, jobs=jobs, sinks=sinks, progress=progress,
                              cost_model=cost_model)
        self.farm.clean()
        self.exp_dir = self.farm.exp_dir

    @property
    def outcomes(self) -> list[Any]:
        """Every RunOutcome so far (for the end-of-run summary)."""
        return self.farm.outcomes

    def measure(self, cands: Sequence[Candidate]) -> list[MeasureResult]:
        by_id: dict[str, list[Any]] = {}
        for o in self.farm.measure(cands):
            by_id.setdefault(o.candidate_id, []).append(o)
        for outs in by_id.values():
            outs.sort(key=lambda o: o.repeat)
        return [result_from_outcomes(c.id, by_id.get(c.id, [])) for c in cands]

    def close(self) -> None:
        self.farm.close()


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
