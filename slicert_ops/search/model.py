"""Cost models a search ranks with: gradient-boosted trees retrained as it goes.

- :class:`TreeSearchModel` (the ``CostModel`` of ``search/base.py``): for every metric the
  objective needs (the objective metric and each bounded metric) a small bootstrap ensemble
  of XGBoost regressors on log1p(metric), refitted on every successful measurement so far
  -- *including* the ones that broke a bound: an infeasible measurement is a latency sample
  like any other and teaches the latency model where the bound lies. The ensemble's mean
  and spread give, per unmeasured candidate, a predicted value and an uncertainty (log
  space), from which the strategy derives the probability that a bound holds
  (:meth:`TreeSearchModel.feasibility`).
  Features: the space's (``search/space.py``: the cost-model package's candidate features)
  plus, when a prior exists, the prior's predictions (``prior.<metric>``, log1p) as extra
  columns: the prior's knowledge of other experiments carries over, the search's own data
  corrects it.
- Priors: :class:`ChampionPrior` (the registered champion, ``costmodel.loader``) and
  :class:`TransferPrior` (a model fitted here on measurements of *other* spaces: what the
  champion is, without a registry; the bench uses it to show transfer), both evaluated once
  over the whole space; ``predictions`` = {metric: array aligned with the space}.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slicert_ops.manifest import Candidate
from slicert_ops.search.base import CostModel, MeasureResult
from slicert_ops.search.space import SearchSpace, feature_frame_of

log = logging.getLogger("slicert.search")

MIN_TRAIN = 3  # below this many measurements the model predicts the prior (or a constant)
MEMBERS = 4    # bootstrap ensemble size (the spread is the model's uncertainty)
# Floor of the uncertainty of a log1p prediction, as a share of the spread of the measured
# values: the trees fit their few training points almost exactly, so the ensemble alone is
# over-confident near measured candidates. Relative, not absolute: a code size varies by
# 3 % over a space, a latency by 100x; one absolute floor would be noise for the first and
# nothing for the second.
SIGMA_FLOOR = 0.1

# Small-data settings: the search refits after every round on tens of points. One thread:
# on tens of rows OpenMP synchronisation costs more than it saves, and far more when the
# cores are busy measuring.
SEARCH_XGB_PARAMS: dict[str, Any] = {
    "n_estimators": 60, "max_depth": 3, "learning_rate": 0.25, "min_child_weight": 1.0,
    "reg_lambda": 1.0, "subsample": 1.0, "colsample_bytree": 1.0, "nthread": 1,
}


class ChampionPrior:
    """Champion predictions over a whole space: {metric: array aligned with the space}."""

    def __init__(self, name: str, version: str, predictions: dict[str, np.ndarray]) -> None:
        self.name, self.version, self.predictions = name, version, predictions

    @classmethod
    def load(cls, space: SearchSpace, metrics: Sequence[str]) -> ChampionPrior | None:
        try:
            from slicert_ops.costmodel.loader import load_champion

            champion = load_champion()
        except Exception as exc:  # noqa: BLE001 - a search goes on without a champion
            log.warning("no champion cost model: %s", exc)
            return None
        if champion is None:
            return None
        try:
            frame = champion.predict(space.features())
        except Exception as exc:  # noqa: BLE001
            log.warning("champion %s v%s cannot rank this space: %s",
                        getattr(champion, "name", "?"), getattr(champion, "version", "?"), exc)
            return None
        preds = {m: np.asarray(frame[m], dtype="float64") for m in metrics if m in frame}
        if not preds or not all(np.isfinite(v).all() for v in preds.values()):
            log.warning("champion predicts none of %s (or NaN): not used", list(metrics))
            return None
        return cls(str(champion.name), str(champion.version), preds)

    def for_space(self, space: SearchSpace) -> ChampionPrior:
        return self

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "metrics": sorted(self.predictions)}


PER_MAC = ("kernel_cycles", "wall_cycles", "instructions", "kernel_instructions")
#: Network layer features a kernel's cost cannot fall with (``network/features.py``): guarded
#: iterations past the output's edge, register-block values spilled, patch bytes copied.
MONOTONE_COSTS = ("f_loop_waste", "f_block_spill", "f_copies_per_mac")
#: Tree depths of the prior's bag: a shallow model generalises the coarse trends (form,
#: waste) across layers, a deep one the interactions; their mean in log cost is steadier in
#: its top picks than either (bench_network_search: 22 -> 25 of 26 tasks within 3 %).
PRIOR_DEPTHS = (2, 4, 6)


def _work(frame: Any) -> np.ndarray:
    """The MACs a kernel computes: the layer's, times the register block's recomputed edge
    pixels (``f_block_waste``; 1 without it, e.g. single operators). A layer without MACs
    (pooling, add) counts its window reads, else 1: a cost per zero MACs is no target."""
    waste = frame["f_block_waste"].fillna(1.0) if "f_block_waste" in frame else 1.0
    work = (frame["f_macs"] * waste).to_numpy(dtype="float64")
    if "f_window_reads" in frame:
        reads = frame["f_window_reads"].to_numpy(dtype="float64")
        work = np.where(np.isfinite(work) & (work > 0), work, reads)
    return np.where(np.isfinite(work) & (work > 0), work, 1.0)


def _matrix(xgb: Any, matrix: np.ndarray, label: np.ndarray) -> Any:
    return xgb.DMatrix(matrix, label=label, nthread=1, missing=np.nan)


def _boost(xgb: Any, params: dict[str, Any], data: Any) -> Any:
    """One regressor of the bag (the data built once per label, shared by the depths)."""
    return xgb.train(params, data, num_boost_round=300)


class TransferPrior:
    """A model of other spaces' measurements, evaluated over this space's candidates.

    ``fit(cands, others, metrics)`` trains one XGBoost regressor per metric on the candidate
    features of every (candidates, {id: MeasureResult}) pair in ``others`` (other operators,
    shapes, dtypes, runner options) and predicts ``cands``. Nothing of the target space is
    used: this is what a champion trained on earlier experiments knows.

    Whole-kernel counts (``kernel_cycles``, ``wall_cycles``, instructions) are learned per
    multiply-accumulate (``f_macs``) and scaled back: trees cannot extrapolate to a size
    they have not seen, while the cost of a MAC under a schedule carries over between
    shapes."""

    def __init__(self, predictions: dict[str, np.ndarray], n_train: int,
                 ids: Sequence[str]) -> None:
        self.predictions, self.n_train = predictions, n_train
        self.ids = list(ids)
        self.name, self.version = "transfer", f"{n_train} runs"

    @classmethod
    def fit(cls, cands: Sequence[Candidate],
            others: Sequence[tuple[Sequence[Candidate], Mapping[str, MeasureResult]]],
            metrics: Sequence[str], relative: bool = False) -> TransferPrior:
        """``relative``: also learn each other space's costs relative to its own mean (the
        ranking within a space) and blend it half and half (in log cost) with the absolute
        model, at the level the absolute model gives this space. A schedule choice that only
        ever appears on costly layers (im2col on first layers) is then not mistaken for a
        costly choice (network tasks, bench_network_search: tuned / best 1.055 -> 1.017)."""
        import pandas as pd
        import xgboost as xgb

        frames, targets = [], {m: [] for m in metrics}
        groups: list[int] = []
        for o_cands, table in others:
            ok = [c for c in o_cands if c.id in table and table[c.id].ok
                  and all(_finite(table[c.id].metrics.get(m)) for m in metrics)]
            if not ok:
                continue
            groups += [len(frames)] * len(ok)
            frames.append(feature_frame_of(ok))
            for m in metrics:
                targets[m] += [float(table[c.id].metrics[m]) for c in ok]
        target = feature_frame_of(cands)
        if not frames:
            raise ValueError("no measurements to train a transfer prior on")
        train = pd.concat(frames, ignore_index=True)
        cols = sorted(set(train.columns) | set(target.columns))
        onehot = [c for c in cols if "=" in c]
        train = train.reindex(columns=cols)
        target = target.reindex(columns=cols)
        train[onehot] = train[onehot].fillna(0.0)
        target[onehot] = target[onehot].fillna(0.0)
        params: dict[str, Any] = {
            "objective": "reg:squarederror", "tree_method": "hist", "nthread": 1, "eta": 0.1,
            "verbosity": 0, "seed": 0,
            # more waste never makes a kernel faster: trees fitted on a few layers otherwise
            # learn noise of the wrong sign in these columns and carry it to new layers
            "monotone_constraints": "(" + ",".join(
                "1" if c in MONOTONE_COSTS else "0" for c in cols) + ")"}
        preds = {}
        dtrain = train.to_numpy()
        dtest = xgb.DMatrix(target.to_numpy(), missing=np.nan, nthread=1)
        g = np.asarray(groups)
        for m in metrics:
            per_mac = m in PER_MAC and "f_macs" in cols
            scale_train = _work(train) if per_mac else 1.0
            scale_test = _work(target) if per_mac else 1.0
            y = np.log1p(np.clip(np.asarray(targets[m]) / scale_train, 0, None))
            absolute = _matrix(xgb, dtrain, y)
            if relative:
                within = _matrix(xgb, dtrain, y - (np.bincount(g, weights=y)
                                                   / np.bincount(g))[g])
            levels = []
            for depth in PRIOR_DEPTHS:
                p = dict(params, max_depth=depth)
                level = _boost(xgb, p, absolute).predict(dtest)
                if relative:
                    rel = _boost(xgb, p, within).predict(dtest)
                    level = 0.5 * (rel + level.mean()) + 0.5 * level
                levels.append(level)
            preds[m] = np.expm1(np.mean(levels, axis=0)) * scale_test
        return cls(preds, len(train), [c.id for c in cands])

    def for_space(self, space: SearchSpace) -> TransferPrior:
        """The predictions re-aligned with ``space``'s candidate order."""
        pos = {cid: i for i, cid in enumerate(self.ids)}
        order = [pos[c.id] for c in space.candidates]
        return TransferPrior({m: v[order] for m, v in self.predictions.items()},
                             self.n_train, [c.id for c in space.candidates])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "metrics": sorted(self.predictions)}


class TreeSearchModel(CostModel):
    """Bootstrap ensembles of gradient-boosted trees, one per metric, refitted on all
    measurements (log1p targets)."""

    def __init__(self, space: SearchSpace, metrics: Sequence[str], seed: int = 0,
                 prior: Any = None, params: dict[str, Any] | None = None,
                 members: int = MEMBERS) -> None:
        self.space, self.metrics, self.seed = space, list(metrics), seed
        self.members = max(1, members)
        self.prior = prior
        self.params = {**SEARCH_XGB_PARAMS, **(params or {})}
        frame = space.features()
        frame = frame.loc[:, frame.nunique(dropna=False) > 1]  # constant over the space
        X = frame.to_numpy(dtype="float64")
        if prior is not None:
            extra = [np.log1p(np.clip(v, 0, None)) for v in prior.predictions.values()]
            X = np.column_stack([X, *extra]) if extra else X
        self.X = X
        self.rows: list[int] = []                       # space positions measured ok
        self.targets: dict[str, list[float]] = {m: [] for m in self.metrics}
        self.boosters: dict[str, list[Any]] = {}

    @property
    def n_train(self) -> int:
        return len(self.rows)

    def update(self, cands: Sequence[Candidate], results: Sequence[MeasureResult]) -> None:
        for cand, res in zip(cands, results, strict=True):
            if not res.ok or any(not _finite(res.metrics.get(m)) for m in self.metrics):
                continue
            self.rows.append(self.space.position(cand.id))
            for m in self.metrics:
                self.targets[m].append(float(res.metrics[m]))
        self.boosters = {}
        if self.n_train < MIN_TRAIN:
            return
        import xgboost as xgb

        p = dict(self.params)
        rounds = int(p.pop("n_estimators"))
        base = {"objective": "reg:squarederror", "tree_method": "exact", "verbosity": 0,
                "eta": p.pop("learning_rate"), "lambda": p.pop("reg_lambda"), **p}
        X = self.X[self.rows]
        n = self.n_train
        for m in self.metrics:
            y = np.log1p(np.clip(np.asarray(self.targets[m]), 0, None))
            fitted = []
            for k in range(self.members):
                # member 0: all the data; the others: bootstrap resamples, seeded by the
                # member and the data size (deterministic given the measurements)
                if k == 0:
                    idx = np.arange(n)
                else:
                    idx = np.random.default_rng([self.seed, k, n]).integers(0, n, n)
                dtrain = xgb.DMatrix(X[idx], label=y[idx], missing=np.nan, nthread=1)
                fitted.append(xgb.train({**base, "seed": self.seed + k,
                                         "base_score": float(np.mean(y[idx]))},
                                        dtrain, num_boost_round=rounds))
            self.boosters[m] = fitted

    def predict(self, cands: Sequence[Candidate]) -> dict[str, np.ndarray]:
        """Mean prediction of the members (in the metric's unit)."""
        mean, _ = self.predict_log([self.space.position(c.id) for c in cands])
        return {m: np.expm1(v) for m, v in mean.items()}

    def predict_members(self, cands: Sequence[Candidate]) -> dict[str, np.ndarray]:
        """{metric: array (members, candidates)} of log1p predictions."""
        return self._members([self.space.position(c.id) for c in cands])

    def predict_log(self, pos: Sequence[int]) -> tuple[dict[str, np.ndarray],
                                                        dict[str, np.ndarray]]:
        """(mean, spread) of the log1p prediction per metric, for space positions."""
        members = self._members(pos)
        mean = {m: v.mean(axis=0) for m, v in members.items()}
        std = {m: np.maximum(v.std(axis=0), self._floor(m)) for m, v in members.items()}
        return mean, std

    def _floor(self, metric: str) -> float:
        y = np.log1p(np.clip(np.asarray(self.targets[metric], dtype="float64"), 0, None))
        spread = float(y.std()) if len(y) > 1 else 0.0
        return max(1e-4, SIGMA_FLOOR * spread)

    def _members(self, pos: Sequence[int]) -> dict[str, np.ndarray]:
        pos = list(pos)
        if not self.boosters:
            return {m: v[None, :] for m, v in self._fallback(pos).items()}
        import xgboost as xgb

        dm = xgb.DMatrix(self.X[pos], missing=np.nan, nthread=1)
        return {m: np.stack([b.predict(dm) for b in bs]).astype("float64")
                for m, bs in self.boosters.items()}

    def _fallback(self, pos: list[int]) -> dict[str, np.ndarray]:
        out = {}
        for m in self.metrics:
            if self.prior is not None and m in self.prior.predictions:
                out[m] = np.log1p(np.clip(self.prior.predictions[m][pos], 0, None))
            elif self.targets[m]:
                out[m] = np.full(len(pos), float(np.mean(np.log1p(self.targets[m]))))
            else:
                out[m] = np.zeros(len(pos))
        return out

    def feasibility(self, pos: Sequence[int], bounds: Sequence[Any],
                    sigma: float | None = None) -> np.ndarray:
        """P(every bound holds) per position: each bounded metric's log1p prediction taken
        as normal (ensemble mean, spread floored; ``sigma`` overrides the spread, e.g. for
        an untrained prior), bounds independent."""
        if not bounds:
            return np.ones(len(pos))
        mean, std = self.predict_log(pos)
        p = np.ones(len(pos))
        for b in bounds:
            s = np.full(len(pos), sigma) if sigma is not None else std[b.metric]
            z = (math.log1p(max(b.limit, 0.0)) - mean[b.metric]) / s
            p *= norm_cdf(z)
        return p


_erf = np.vectorize(math.erf, otypes=[float])


def norm_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(np.asarray(z, dtype="float64") / math.sqrt(2.0)))


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
