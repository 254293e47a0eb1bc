"""Cost models a search ranks with: the cost-model package's trees, retrained as it goes.

- :class:`TreeSearchModel` (the ``CostModel`` of ``search/base.py``): one gradient-boosted
  regressor per metric the objective needs (``costmodel.models.make_model``: XGBoost on
  log1p(cycles)), refitted on every successful measurement so far. Its features are the
  space's (``search/space.py``) plus, when a champion exists, the champion's predictions
  (``prior.<metric>``, log1p) as extra columns: the champion's knowledge of other
  experiments carries over, and the search's own data corrects it.
- :class:`ChampionPrior`: the registered champion (``costmodel.loader.load_champion()``)
  evaluated once over the whole space; None when there is no champion (no MLflow, no
  alias yet, or it cannot predict these features).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slicert_ops.manifest import Candidate
from slicert_ops.search.base import CostModel, MeasureResult
from slicert_ops.search.space import SearchSpace

log = logging.getLogger("slicert.search")

MIN_TRAIN = 3  # below this many measurements the model predicts the prior (or a constant)

# Small-data settings: the search refits after every round on tens of points. On the bench
# space these rank as well as the package's training defaults (300 trees, depth 4) at a
# fifth of the cost. One thread: on tens of rows OpenMP synchronisation costs more than it
# saves, and far more when the cores are busy measuring (~0.03 s per refit instead of 0.4).
SEARCH_XGB_PARAMS: dict[str, Any] = {
    "n_estimators": 100, "max_depth": 3, "learning_rate": 0.2, "min_child_weight": 1.0,
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

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "metrics": sorted(self.predictions)}


class TreeSearchModel(CostModel):
    """Gradient-boosted trees over the space's features, refitted on all measurements."""

    def __init__(self, space: SearchSpace, metrics: Sequence[str], seed: int = 0,
                 family: str = "xgboost", prior: ChampionPrior | None = None,
                 params: dict[str, Any] | None = None, members: int = 1) -> None:
        self.space, self.metrics, self.seed, self.family = space, list(metrics), seed, family
        self.members = max(1, members)
        self.prior = prior
        self.params = dict(SEARCH_XGB_PARAMS if family == "xgboost" else {}, **(params or {}))
        frame = space.features().copy()
        if prior is not None:
            for m, values in prior.predictions.items():
                frame[f"prior.{m}"] = np.log1p(np.clip(values, 0, None))
        self.frame = frame
        self.rows: list[int] = []                       # space positions measured ok
        self.targets: dict[str, list[float]] = {m: [] for m in self.metrics}
        self.models: Any = None

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
        if self.n_train < MIN_TRAIN:
            self.models = None
            return
        import pandas as pd

        from slicert_ops.costmodel.models import make_model

        X = self.frame.iloc[self.rows]
        X = X.loc[:, X.nunique(dropna=False) > 1].reset_index(drop=True)  # drop constants
        y = pd.DataFrame({m: self.targets[m] for m in self.metrics}, dtype="float64")
        models = [make_model(self.family, self.params, seed=self.seed).fit(X, y)]
        # Extra members: bootstrap resamples (seeded by the member and the data size), whose
        # disagreement tells where the model is unsure.
        for k in range(1, self.members):
            rng = np.random.default_rng([self.seed, k, self.n_train])
            idx = rng.integers(0, self.n_train, self.n_train)
            models.append(make_model(self.family, self.params, seed=self.seed + k).fit(
                X.iloc[idx].reset_index(drop=True), y.iloc[idx].reset_index(drop=True)))
        self.models = models

    def predict(self, cands: Sequence[Candidate]) -> dict[str, np.ndarray]:
        """Mean prediction of the members (cycles)."""
        members = self.predict_members(cands)
        return {m: np.expm1(np.mean(np.log1p(v), axis=0)) for m, v in members.items()}

    def predict_members(self, cands: Sequence[Candidate]) -> dict[str, np.ndarray]:
        """{metric: array (members, candidates)}; one row when there is no model yet."""
        pos = [self.space.position(c.id) for c in cands]
        if self.models is None:
            return {m: v[None, :] for m, v in self._fallback(pos).items()}
        rows = self.frame.iloc[pos]
        preds = [model.predict(rows) for model in self.models]
        return {m: np.stack([np.clip(np.asarray(p[m], dtype="float64"), 0, None)
                             for p in preds]) for m in self.metrics}

    def _fallback(self, pos: list[int]) -> dict[str, np.ndarray]:
        out = {}
        for m in self.metrics:
            if self.prior is not None and m in self.prior.predictions:
                out[m] = self.prior.predictions[m][pos]
            elif self.targets[m]:
                out[m] = np.full(len(pos), float(np.mean(self.targets[m])))
            else:
                out[m] = np.zeros(len(pos))
        return out


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
