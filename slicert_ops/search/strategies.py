"""Search strategies over the manifest's space: grid, random, cost_model.

All are deterministic for a given seed and a given sequence of measured results, which is
what lets an interrupted search resume: re-run, the strategy proposes the same candidates,
those already in the run folders are replayed from there (``search/tuner.py``).

``cost_model`` (rounds of rank -> measure -> retrain)::

    round 0   the champion's top picks when a champion exists, else a seeded random sample
              (``init`` candidates, default 8)
    round k   rank every unmeasured candidate with the model retrained on everything
              measured so far; measure the best-ranked ones plus a seeded exploration
              share (``exploration``, default 0.2, drawn uniformly from the rest)

Round sizes: ``rounds`` (manifest, optional) splits what the initial sample leaves of the
budget into that many rounds; without it every round measures ``round_size`` (default 4)
candidates, so the proposals do not depend on the budget and raising the budget of a
finished search simply continues it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slicert_ops.search.base import (
    MeasureCandidate,
    MeasureResult,
    SearchContext,
    SearchStrategy,
)
from slicert_ops.search.model import ChampionPrior, TreeSearchModel

DEFAULT_BATCH = 8
DEFAULT_INIT = 8
DEFAULT_ROUND_SIZE = 4


class GridStrategy(SearchStrategy):
    """Candidates in expansion order (the sweep), cut at the budget."""

    name = "grid"

    def pre_tuning(self, ctx: SearchContext) -> None:
        super().pre_tuning(ctx)
        self.next = 0

    def generate_measure_candidates(self, remaining: int) -> list[MeasureCandidate] | None:
        cands = self.ctx.space.candidates[self.next:self.next + min(remaining, DEFAULT_BATCH)]
        self.next += len(cands)
        return [MeasureCandidate(c, "grid") for c in cands] or None


class RandomStrategy(SearchStrategy):
    """Uniform sampling without replacement (seeded): the baseline."""

    name = "random"

    def pre_tuning(self, ctx: SearchContext) -> None:
        super().pre_tuning(ctx)
        rng = np.random.default_rng(ctx.seed)
        self.order = [int(i) for i in rng.permutation(len(ctx.space))]
        self.next = 0

    def generate_measure_candidates(self, remaining: int) -> list[MeasureCandidate] | None:
        take = self.order[self.next:self.next + min(remaining, DEFAULT_BATCH)]
        self.next += len(take)
        return [MeasureCandidate(self.ctx.space.candidates[i], "random") for i in take] or None

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "seed": self.ctx.seed}


class CostModelStrategy(SearchStrategy):
    """Rounds of rank (model) -> measure (top + exploration) -> retrain."""

    name = "cost_model"

    def __init__(self, init: int | None = None, round_size: int | None = None,
                 use_champion: bool = True, family: str = "xgboost", members: int = 1,
                 kappa: float = 0.0, diverse: bool = True) -> None:
        self.init_opt, self.round_size_opt = init, round_size
        self.use_champion, self.family = use_champion, family
        self.members, self.kappa, self.diverse = members, kappa, diverse

    def pre_tuning(self, ctx: SearchContext) -> None:
        super().pre_tuning(ctx)
        n = len(ctx.space)
        budget = min(ctx.budget, n)
        self.rng = np.random.default_rng(ctx.seed)
        self.prior = ChampionPrior.load(ctx.space, ctx.objective.metrics) \
            if self.use_champion else None
        self.model = TreeSearchModel(ctx.space, ctx.objective.metrics, seed=ctx.seed,
                                     family=self.family, prior=self.prior,
                                     members=self.members)
        self.init_size = max(1, min(self.init_opt or DEFAULT_INIT, budget))
        if ctx.rounds:
            rest = max(0, budget - self.init_size)
            self.round_size = max(1, math.ceil(rest / ctx.rounds)) if rest else 1
        else:
            self.round_size = self.round_size_opt or DEFAULT_ROUND_SIZE
        self.unmeasured = np.ones(n, dtype=bool)
        self.round = 0
        self.explore_credit = 0.0

    # -- proposals ----------------------------------------------------------------------
    def generate_measure_candidates(self, remaining: int) -> list[MeasureCandidate] | None:
        if remaining <= 0 or not self.unmeasured.any():
            return None
        size = min(remaining, self.init_size if self.round == 0 else self.round_size,
                   int(self.unmeasured.sum()))
        if self.round == 0 and self.prior is None:
            picks = self._random(size, "init")
        else:
            picks = self._ranked(size, "champion" if self.round == 0 else "model")
        self.round += 1
        for mc in picks:
            self.unmeasured[self.ctx.space.position(mc.candidate.id)] = False
        return picks

    def _random(self, size: int, source: str) -> list[MeasureCandidate]:
        pool = np.flatnonzero(self.unmeasured)
        chosen = self.rng.permutation(pool)[:size]  # a prefix of one seeded order
        return [MeasureCandidate(self.ctx.space.candidates[int(i)], source) for i in chosen]

    def _ranked(self, size: int, source: str) -> list[MeasureCandidate]:
        pool = np.flatnonzero(self.unmeasured)
        cands = [self.ctx.space.candidates[int(i)] for i in pool]
        members = self.model.predict_members(cands)
        score, predicted = self._score(members)
        self.explore_credit += self.ctx.exploration * size
        n_explore = min(int(self.explore_credit), size - 1 if size > 1 else 0)
        self.explore_credit -= n_explore
        # best first; exact ties broken by a seeded shuffle, not by expansion order
        tiebreak = self.rng.permutation(len(pool))
        order = np.lexsort((tiebreak, score))
        top = _diverse(order, score, size - n_explore) if self.diverse else \
            list(order[:size - n_explore])
        picks = [MeasureCandidate(cands[int(k)], source, float(predicted[k])) for k in top]
        if n_explore:
            rest = np.setdiff1d(np.arange(len(pool)), np.asarray(top, dtype=int))
            chosen = self.rng.choice(rest, size=min(n_explore, len(rest)), replace=False)
            picks += [MeasureCandidate(cands[int(k)], "explore", float(predicted[k]))
                      for k in chosen]
        return picks

    def _score(self, members: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(rank score, predicted objective). The score is the members' mean log prediction
        minus ``kappa`` standard deviations (optimism where the model is unsure);
        predicted-infeasible candidates rank after every feasible one (among themselves
        by how far they break their bounds)."""
        obj = self.ctx.objective
        logs = np.log1p(members[obj.metric])
        mean = logs.mean(axis=0)
        score = mean - self.kappa * logs.std(axis=0)
        predicted = np.expm1(mean)
        if not obj.bounds:
            return score, predicted
        excess = np.zeros_like(score)
        for b in obj.bounds:
            pred_b = np.expm1(np.log1p(members[b.metric]).mean(axis=0))
            excess = np.maximum(excess, pred_b / max(b.limit, 1e-9) - 1.0)
        return np.where(excess > 0, 1e6 + excess, score), predicted

    # -- learning -----------------------------------------------------------------------
    def notify_runner_results(self, cands: Sequence[MeasureCandidate],
                              results: Sequence[MeasureResult]) -> None:
        self.model.update([mc.candidate for mc in cands], results)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "seed": self.ctx.seed, "init": self.init_size,
                "round_size": self.round_size, "rounds": self.ctx.rounds,
                "exploration": self.ctx.exploration, "model": self.family,
                "champion": self.prior.describe() if self.prior else None}


def _diverse(order: np.ndarray, score: np.ndarray, n: int) -> list[int]:
    """The n best of ``order``, taking at most one of each exactly-tied score while untied
    ones remain (trees predict in steps: a tie is a group the model cannot tell apart, e.g.
    the same kernel at several slice budgets; measuring one of them teaches the most)."""
    picked: list[int] = []
    seen: set[float] = set()
    later: list[int] = []
    for k in order:
        if len(picked) == n:
            break
        key = float(score[k])
        if key in seen:
            later.append(int(k))
            continue
        seen.add(key)
        picked.append(int(k))
    return picked + later[:n - len(picked)]


STRATEGIES = {"grid": GridStrategy, "random": RandomStrategy, "cost_model": CostModelStrategy}


def make_strategy(name: str, **kwargs: Any) -> SearchStrategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown search strategy {name!r} (known: "
                         f"{', '.join([*STRATEGIES, 'meta_schedule'])})") from None
    return cls(**kwargs)
