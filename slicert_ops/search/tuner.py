"""The search loop (meta_schedule's task scheduler, for one task).

    strategy.pre_tuning(ctx)
    while trials < budget:
        batch = strategy.generate_measure_candidates(budget - trials)   # None: done
        for each candidate: database.lookup(c)  -> replayed (no measurement)
        measurer.measure(the others)            -> measured now
        database.commit(one Trial per candidate, in proposal order)
        strategy.notify_runner_results(batch, results)

Budget: one trial = one candidate (all its ``repeat`` runs). A candidate the database
already holds (run folders of an earlier, interrupted session of this search, or of any
sweep of the same experiment) is *replayed*: its results come from the folders, nothing
runs, and it still counts as a trial, because it is part of the sequence the strategy
chose. Strategies are deterministic given their seed and the results they were told, so a
re-run proposes the same candidates in the same order: an interrupted search resumes where
it stopped and ends exactly as an uninterrupted one, having measured each candidate once
in total. ``SearchResult.measured`` counts what ran in this session, ``replayed`` what came
from the folders; ``trials`` = both = the budget spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.search.base import (
    Database,
    Measurer,
    MeasureResult,
    SearchContext,
    SearchStrategy,
    Trial,
)
from slicert_ops.search.objective import Objective


@dataclass
class SearchResult:
    strategy: str
    objective: Objective
    budget: int
    space_size: int
    trials: list[Trial] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    exp_dir: Path | None = None
    experiment: str = ""
    search_dir: Path | None = None   # trials.jsonl, summary.json, curve.csv/png

    @property
    def measured(self) -> int:
        return sum(1 for t in self.trials if not t.reused)

    @property
    def replayed(self) -> int:
        return sum(1 for t in self.trials if t.reused)

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.status != "ok"]

    @property
    def infeasible(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "ok" and not t.feasible]

    @property
    def best(self) -> Trial | None:
        """The best *feasible* successful trial (ties: the earlier one)."""
        best = None
        for t in self.trials:
            if t.status == "ok" and t.feasible and t.value is not None and (
                    best is None or t.value < best.value):
                best = t
        return best

    def curve(self) -> list[tuple[int, float | None]]:
        """(trials spent, best feasible objective so far) after every trial."""
        out, best = [], None
        for t in self.trials:
            if t.status == "ok" and t.feasible and t.value is not None and (
                    best is None or t.value < best):
                best = t.value
            out.append((t.number, best))
        return out

    def best_at(self, n: int) -> float | None:
        """Best feasible objective after the first n trials."""
        curve = self.curve()
        if not curve:
            return None
        return curve[min(n, len(curve)) - 1][1]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.best is None else 0

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "schema": "slicert-search/1", "experiment": self.experiment,
            "strategy": self.strategy, "objective": self.objective.to_dict(),
            "budget": self.budget, "space_size": self.space_size,
            "trials": len(self.trials), "measured": self.measured, "replayed": self.replayed,
            "failed": len(self.failed), "infeasible": len(self.infeasible),
            "best": best.to_dict() if best else None,
            "curve": [[n, v] for n, v in self.curve()],
            "settings": self.settings, "elapsed_s": round(self.elapsed_s, 3),
        }


def tune(ctx: SearchContext, strategy: SearchStrategy, measurer: Measurer,
         database: Database, *, on_trial: Any = None) -> SearchResult:
    """Run one search to its budget (or until the strategy has nothing left)."""
    t0 = time.perf_counter()
    budget = min(ctx.budget, len(ctx.space))
    strategy.pre_tuning(ctx)
    trials: list[Trial] = []
    round_no = 0
    while len(trials) < budget:
        batch = strategy.generate_measure_candidates(budget - len(trials))
        if not batch:
            break
        batch = batch[:budget - len(trials)]
        results: list[MeasureResult | None] = [database.lookup(mc.candidate) for mc in batch]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            fresh = measurer.measure([batch[i].candidate for i in todo])
            for i, res in zip(todo, fresh, strict=True):
                results[i] = res
        done: list[MeasureResult] = [r for r in results if r is not None]
        for mc, res in zip(batch, done, strict=True):
            remember = getattr(database, "remember", None)
            if remember is not None and not res.reused:
                remember(mc.candidate, res)
            ev = ctx.objective.evaluate(res.metrics) if res.ok else None
            trial = Trial(
                number=len(trials) + 1, round=round_no, candidate_id=mc.candidate.id,
                candidate_index=mc.candidate.index, schedule=dict(mc.candidate.schedule),
                source=mc.source, status=res.status,
                value=ev.value if ev else None, feasible=bool(ev and ev.feasible),
                violations=list(ev.violations) if ev else [], reused=res.reused,
                predicted=mc.predicted, error=res.error, runs=list(res.runs),
                metrics={k: res.metrics[k] for k in _kept(ctx.objective, res.metrics)})
            trials.append(trial)
            database.commit(trial)
            if on_trial is not None:
                on_trial(trial)
        strategy.notify_runner_results(batch, done)
        round_no += 1
    strategy.post_tuning()
    return SearchResult(strategy=strategy.name, objective=ctx.objective, budget=budget,
                        space_size=len(ctx.space), trials=trials,
                        settings=strategy.describe(), elapsed_s=time.perf_counter() - t0)


KEPT_METRICS = ("kernel_cycles", "wall_cycles", "max_preemption_latency_cycles",
                "yield_checks", "text_bytes", "correct")


def _kept(objective: Objective, metrics: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys([*objective.metrics, *KEPT_METRICS]))
    return [n for n in names if n in metrics]
