"""Search strategies over the manifest's space: grid, random, cost_model.

All are deterministic for a given seed and a given sequence of measured results, which is
what lets an interrupted search resume: re-run, the strategy proposes the same candidates,
those already in the run folders are replayed from there (``search/tuner.py``).

``cost_model`` (rounds of rank -> measure -> retrain)::

    round 0   ``init`` candidates (default 8): with a prior (the registered champion, or a
              model of other spaces' measurements) half are its best picks, the rest a
              space-filling design (the best of 64 seeded random designs by the maximin
              distance of their schedule parameters); without a prior, all space-filling
    round k   the model (bootstrap ensembles of XGBoost on the candidate features, one per
              metric the objective needs, retrained on every measurement so far, including
              the infeasible ones) ranks every unmeasured candidate three ways, each
              constraint-aware through P(every bound holds) from the bounded metrics' own
              models: constrained expected improvement (EI x P), expected objective / P,
              and the best feasible point's neighbours; the round takes their best picks in
              turn, plus an exploration share (``exploration``, default 0.2, credited over
              rounds): candidates holding a pair of parameter values not measured yet,
              then uniform

Round sizes: ``rounds`` (manifest, optional) splits what the initial sample leaves of the
budget into that many rounds; without it every round measures ``round_size`` (default 4)
candidates, and a round's content never depends on the budget (the last round is cut, not
re-planned): a search of budget b proposes exactly the first b trials of any longer search
with the same seed, and raising the budget of a finished search simply continues it.
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
from slicert_ops.search.model import MEMBERS, ChampionPrior, TreeSearchModel, norm_cdf

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
    """Rounds of rank (model) -> measure (best-ranked + exploration) -> retrain."""

    name = "cost_model"

    def __init__(self, init: int | None = None, round_size: int | None = None,
                 use_champion: bool = True, prior: Any = None, members: int = MEMBERS,
                 acquisition: str = "mixed", space_filling: bool = True,
                 exploration: float | None = None, diverse: bool = True,
                 portfolio: Sequence[str] = ("improve", "exploit", "local")) -> None:
        self.init_opt, self.round_size_opt = init, round_size
        self.use_champion, self.prior_opt = use_champion, prior
        self.members, self.acquisition = members, acquisition
        self.space_filling, self.exploration_opt, self.diverse = \
            space_filling, exploration, diverse
        self.portfolio = tuple(portfolio)
        if not set(self.portfolio) <= {"improve", "exploit", "local"}:
            raise ValueError(f"portfolio {portfolio!r}: rankings are improve, exploit, local")
        if acquisition not in ("mixed", "ei", "mean"):
            raise ValueError(f"acquisition {acquisition!r}: valid: mixed, ei, mean")

    def pre_tuning(self, ctx: SearchContext) -> None:
        super().pre_tuning(ctx)
        n = len(ctx.space)
        budget = min(ctx.budget, n)
        self.rng = np.random.default_rng(ctx.seed)
        metrics = ctx.objective.metrics
        if self.prior_opt is not None:
            self.prior = self.prior_opt.for_space(ctx.space)
        elif self.use_champion:
            self.prior = ChampionPrior.load(ctx.space, metrics)
        else:
            self.prior = None
        self.model = TreeSearchModel(ctx.space, metrics, seed=ctx.seed, prior=self.prior,
                                     members=self.members)
        # not cut to the budget: a shorter search is a prefix of a longer one
        self.init_size = max(1, self.init_opt or DEFAULT_INIT)
        if ctx.rounds:
            rest = max(0, budget - self.init_size)
            self.round_size = max(1, math.ceil(rest / ctx.rounds)) if rest else 1
        else:
            self.round_size = self.round_size_opt or DEFAULT_ROUND_SIZE
        self.exploration = ctx.exploration if self.exploration_opt is None \
            else self.exploration_opt
        self.unmeasured = np.ones(n, dtype=bool)
        self.round = 0
        self.explore_credit = 0.0
        self.best_log: float | None = None     # best feasible objective so far, log1p
        self.best_pos: int | None = None       # ... and its space position
        self.unit = _unit_grid(ctx.space)
        self.pairs = _pair_codes(self.unit)

    # -- proposals ----------------------------------------------------------------------
    def generate_measure_candidates(self, remaining: int) -> list[MeasureCandidate] | None:
        """One round. Its content does not depend on ``remaining`` (a shorter last round is
        a prefix of the full one), so a search of budget b proposes exactly the first b
        trials of any longer search with the same seed."""
        if remaining <= 0 or not self.unmeasured.any():
            return None
        size = min(self.init_size if self.round == 0 else self.round_size,
                   int(self.unmeasured.sum()))
        picks = self._first(size) if self.round == 0 else self._ranked(size, "model")
        picks = picks[:remaining]
        self.round += 1
        for mc in picks:
            self.unmeasured[self.ctx.space.position(mc.candidate.id)] = False
        return picks

    def _first(self, size: int) -> list[MeasureCandidate]:
        """Round 0: the prior's best picks (half the round) when there is a prior, the rest
        a space-filling design (the best of many seeded random designs by the maximin
        distance of their schedule parameters): every parameter's range is covered without
        the corner bias of a pure maximin design."""
        picks: list[MeasureCandidate] = []
        if self.prior is not None:
            picks = self._ranked(size - size // 2, "champion", explore=False)
            for mc in picks:
                self.unmeasured[self.ctx.space.position(mc.candidate.id)] = False
        pool = np.flatnonzero(self.unmeasured)
        n = size - len(picks)
        if self.space_filling:
            chosen = _space_filling(self.unit[pool], n, self.rng)
        else:
            chosen = self.rng.permutation(len(pool))[:n]
        picks += [MeasureCandidate(self.ctx.space.candidates[int(pool[k])], "init")
                  for k in chosen]
        return picks

    def _ranked(self, size: int, source: str, explore: bool = True
                ) -> list[MeasureCandidate]:
        pool = np.flatnonzero(self.unmeasured)
        cands = [self.ctx.space.candidates[int(i)] for i in pool]
        scores, predicted, p_feas = self._scores(pool)
        n_explore = 0
        if explore:
            self.explore_credit += self.exploration * size
            n_explore = min(int(self.explore_credit), size - 1 if size > 1 else 0)
            self.explore_credit -= n_explore
        # each ranking best (lowest) first; exact ties broken by one seeded shuffle
        tiebreak = self.rng.permutation(len(pool))
        rankings = []
        for score in scores:
            order = np.lexsort((tiebreak, score))
            rankings.append(_diverse(order, score, size) if self.diverse else
                            [int(k) for k in order[:size]])
        top = _interleave(rankings, size - n_explore)
        picks = [MeasureCandidate(cands[k], source, float(predicted[k])) for k in top]
        if n_explore:
            rest = np.setdiff1d(np.arange(len(pool)), np.asarray(top, dtype=int))
            likely = rest[p_feas[rest] >= 0.5]
            rest = likely if len(likely) >= n_explore else rest
            chosen = self._explore(pool, rest, scores[0], n_explore)
            picks += [MeasureCandidate(cands[int(k)], "explore", float(predicted[k]))
                      for k in chosen]
        return picks

    def _explore(self, pool: np.ndarray, rest: np.ndarray, score: np.ndarray,
                 n: int) -> list[int]:
        """Exploration picks (indices into ``pool``, from ``rest``): candidates holding a
        pair of parameter values (e.g. micro_tile 2 with unroll 8) that no measured
        candidate holds yet, most new pairs first, the model's score breaking ties; once
        every pair was measured, uniform (epsilon-greedy). Two-parameter interactions are
        what a tree model fitted on few points most often gets wrong, and what one
        measurement settles."""
        measured = np.flatnonzero(~self.unmeasured)
        covered = [set(c[measured].tolist()) for c in self.pairs]
        rest = [int(k) for k in self.rng.permutation(rest)]
        out: list[int] = []
        for _ in range(min(n, len(rest))):
            new = np.array([sum(int(c[pool[k]]) not in cov
                                for c, cov in zip(self.pairs, covered, strict=True))
                            for k in rest])
            if new.max(initial=0) == 0:
                k = rest[0]
            else:
                cand = [rest[i] for i in np.flatnonzero(new == new.max())]
                k = min(cand, key=lambda i: score[i])
            out.append(k)
            rest.remove(k)
            for c, cov in zip(self.pairs, covered, strict=True):
                cov.add(int(c[pool[k]]))
        return out

    def _scores(self, pool: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """([rank scores: lower is better], predicted objective, P(feasible)).

        Rankings, all constraint-aware:
        - *exploit*: predicted log1p(objective) minus log P(feasible): the expected objective
          inflated by the risk of breaking a bound;
        - *improve*: minus the expected improvement of log1p(objective) over the best
          feasible value measured so far, times P(feasible) (constrained EI); before
          anything feasible was measured, minus P(feasible), the predicted objective
          breaking ties.
        - *local* (once something feasible was measured): the exploit score among the
          neighbours of the best feasible candidate (one schedule parameter changed).
        ``acquisition='mixed'`` (default) takes the rounds' model picks alternately from
        the three (a portfolio: greedy exploitation converges fast on smooth landscapes, EI
        leaves a trap the model believes in, the neighbourhood refines the best point where
        the model cannot resolve the differences); ``mean`` / ``ei`` use one ranking.
        """
        obj = self.ctx.objective
        mean, std = self.model.predict_log(pool)
        mu, sigma = mean[obj.metric], std[obj.metric]
        trained = bool(self.model.boosters)
        p_feas = self.model.feasibility(pool, obj.bounds,
                                        sigma=None if trained else PRIOR_SIGMA)
        predicted = np.expm1(mu)
        exploit = mu - np.log(np.clip(p_feas, 1e-6, 1.0))
        if self.acquisition == "mean" or self.best_log is None and not obj.bounds:
            return [exploit], predicted, p_feas
        if self.best_log is None:  # nothing feasible yet: find something feasible and fast
            improve = -p_feas + 1e-3 * (mu - mu.min())
        else:
            z = (self.best_log - mu) / sigma
            improve = -(sigma * (z * norm_cdf(z) + _norm_pdf(z)) * p_feas)
        if self.acquisition == "ei":
            return [improve], predicted, p_feas
        named = {"exploit": exploit, "improve": improve}
        if self.best_pos is not None:
            # local: the incumbent's neighbours (one schedule parameter changed), by the
            # exploit score; a constrained optimum usually lies on the bound, where the
            # model is least sure and a neighbour of the best feasible point is the
            # likeliest improvement
            differ = (np.abs(self.unit[pool] - self.unit[self.best_pos]) > 1e-9).sum(axis=1)
            named["local"] = exploit + 1e3 * (differ != 1)
        return [named[k] for k in self.portfolio if k in named], predicted, p_feas

    # -- learning -----------------------------------------------------------------------
    def notify_runner_results(self, cands: Sequence[MeasureCandidate],
                              results: Sequence[MeasureResult]) -> None:
        obj = self.ctx.objective
        for res in results:
            if res.ok:
                ev = obj.evaluate(res.metrics)
                if ev.feasible and ev.value is not None:
                    v = math.log1p(max(ev.value, 0.0))
                    if self.best_log is None or v < self.best_log:
                        self.best_log = v
                        self.best_pos = self.ctx.space.position(res.candidate_id)
        self.model.update([mc.candidate for mc in cands], results)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "seed": self.ctx.seed, "init": self.init_size,
                "round_size": self.round_size, "rounds": self.ctx.rounds,
                "exploration": self.exploration, "acquisition": self.acquisition,
                "portfolio": list(self.portfolio),
                "members": self.members, "space_filling": self.space_filling,
                "prior": self.prior.describe() if self.prior else None}


PRIOR_SIGMA = 0.3  # uncertainty (log1p) of a prior's bound prediction before any training


def _norm_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _unit_grid(space: Any) -> np.ndarray:
    """The numeric schedule parameters of every candidate, log2-scaled to [0, 1] per
    parameter (constant ones dropped): the coordinates of the space-filling design."""
    keys = sorted({k for c in space.candidates for k, v in c.schedule.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)})
    cols = []
    for k in keys:
        v = np.array([float(c.schedule.get(k) or 0.0) for c in space.candidates])
        v = np.log2(np.clip(v, 0, None) + 1.0)
        span = v.max() - v.min()
        if span > 0:
            cols.append((v - v.min()) / span)
    if not cols:
        return np.zeros((len(space), 1))
    return np.column_stack(cols)


def _pair_codes(unit: np.ndarray) -> list[np.ndarray]:
    """Per pair of parameters, an integer code of the two values of every candidate."""
    levels = [np.unique(unit[:, j], return_inverse=True)[1] for j in range(unit.shape[1])]
    out = []
    for i in range(len(levels)):
        for j in range(i + 1, len(levels)):
            out.append(levels[i] * (int(levels[j].max()) + 1) + levels[j])
    return out


SPACE_FILLING_DESIGNS = 64


def _space_filling(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n of ``points``: the best of SPACE_FILLING_DESIGNS seeded random designs
    by their smallest pairwise distance (then their mean nearest-neighbour distance)."""
    if n <= 0:
        return np.zeros(0, dtype=int)
    if n == 1 or len(points) <= n:
        return rng.permutation(len(points))[:n]
    best, best_key = None, None
    for _ in range(SPACE_FILLING_DESIGNS):
        idx = rng.choice(len(points), size=n, replace=False)
        p = points[idx]
        d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        nn = d.min(axis=1)
        key = (float(nn.min()), float(nn.mean()))
        if best_key is None or key > best_key:
            best, best_key = idx, key
    return best


def _interleave(rankings: list[list[int]], n: int) -> list[int]:
    """n distinct items taken from the rankings in turn (first of each, then second...)."""
    out: list[int] = []
    seen: set[int] = set()
    for k in range(max((len(r) for r in rankings), default=0)):
        for r in rankings:
            if len(out) == n:
                return out
            if k < len(r) and r[k] not in seen:
                seen.add(r[k])
                out.append(r[k])
    return out


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
