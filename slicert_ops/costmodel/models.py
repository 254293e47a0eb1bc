"""Gradient-boosted tree cost models: XGBoost and LightGBM, one regressor per target.

Targets are fitted as log1p(cycles) (cycle counts span orders of magnitude and the ranking
is what matters); predictions come back in cycles. Training uses 2 threads and modest
sizes: a few hundred candidates train in well under a second per model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slicert_ops.costmodel.base import CostModel
from slicert_ops.costmodel.pyfunc_model import NativePredictor, prepare_matrix

THREADS = 2

XGB_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300, "max_depth": 4, "learning_rate": 0.08, "subsample": 1.0,
    "colsample_bytree": 1.0, "min_child_weight": 1.0, "reg_lambda": 1.0,
}
LGBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300, "num_leaves": 15, "learning_rate": 0.08, "min_child_samples": 2,
    "min_data_in_bin": 1, "max_bin": 255, "reg_lambda": 1.0,
}


class TreeCostModel(CostModel):
    """Shared fit/predict; subclasses fit one booster."""

    defaults: dict[str, Any] = {}

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0,
                 log_target: bool = True) -> None:
        super().__init__()
        self.params = {**self.defaults, **(params or {})}
        self.seed = seed
        self.log_target = log_target
        self.predictor: NativePredictor | None = None

    @property
    def feature_columns(self) -> list[str]:
        return self.predictor.feature_columns if self.predictor else []

    def fit(self, X: pd.DataFrame, y: pd.DataFrame) -> TreeCostModel:
        columns = list(X.columns)
        onehot = [c for c in columns if "=" in c]
        matrix = prepare_matrix(X, columns, onehot)
        boosters = {}
        for target in y.columns:
            values = y[target].to_numpy(dtype="float64")
            values = np.log1p(np.clip(values, 0, None)) if self.log_target else values
            boosters[target] = self._fit_one(matrix, values)
        self.predictor = NativePredictor(self.family, columns, list(y.columns), boosters,
                                         onehot, self.log_target)
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        if self.predictor is None:
            raise RuntimeError("predict() before fit()")
        return self.predictor.predict(X)

    def save_native(self, directory: str | Path) -> Path:
        """Portable model folder (what the MLflow pyfunc loads)."""
        return self.predictor.save(directory)

    def feature_importance(self) -> dict[str, dict[str, float]]:
        out = {}
        for target, booster in self.predictor.boosters.items():
            out[target] = self._importance(booster)
        return out

    def _fit_one(self, matrix: np.ndarray, values: np.ndarray) -> Any:
        raise NotImplementedError

    def _importance(self, booster: Any) -> dict[str, float]:
        raise NotImplementedError


class XGBCostModel(TreeCostModel):
    family = "xgboost"
    defaults = XGB_DEFAULTS

    def _fit_one(self, matrix, values):
        import xgboost as xgb

        p = dict(self.params)
        rounds = int(p.pop("n_estimators"))
        params = {"objective": "reg:squarederror", "tree_method": "hist", "nthread": THREADS,
                  "seed": self.seed, "eta": p.pop("learning_rate"), "lambda": p.pop("reg_lambda"),
                  "verbosity": 0, **p}
        return xgb.train(params, xgb.DMatrix(matrix, label=values, missing=np.nan),
                         num_boost_round=rounds)

    def _importance(self, booster):
        scores = booster.get_score(importance_type="gain")
        cols = self.feature_columns
        return {cols[int(k[1:])]: float(v) for k, v in scores.items()}


class LGBMCostModel(TreeCostModel):
    family = "lightgbm"
    defaults = LGBM_DEFAULTS

    def _fit_one(self, matrix, values):
        import lightgbm as lgb

        p = dict(self.params)
        rounds = int(p.pop("n_estimators"))
        dataset_params = {k: p.pop(k) for k in ("min_data_in_bin", "max_bin") if k in p}
        params = {"objective": "regression", "num_threads": THREADS, "seed": self.seed,
                  "deterministic": True, "force_row_wise": True, "verbosity": -1,
                  "min_data_in_leaf": p.pop("min_child_samples"), **dataset_params, **p}
        dataset = lgb.Dataset(matrix, label=values, params=dataset_params,
                              free_raw_data=True)
        return lgb.train(params, dataset, num_boost_round=rounds)

    def _importance(self, booster):
        gains = booster.feature_importance(importance_type="gain")
        return {c: float(g) for c, g in zip(self.feature_columns, gains, strict=True) if g > 0}


FAMILIES: dict[str, type[TreeCostModel]] = {"xgboost": XGBCostModel, "lightgbm": LGBMCostModel}


def make_model(family: str, params: dict[str, Any] | None = None, seed: int = 0) -> TreeCostModel:
    try:
        cls = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown cost model family {family!r} "
                         f"(known: {', '.join(FAMILIES)})") from None
    return cls(params=params, seed=seed)
