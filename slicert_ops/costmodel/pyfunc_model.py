"""The fitted cost model in portable form, and its MLflow pyfunc face.

This file is deliberately self-contained (numpy, pandas, xgboost, lightgbm; no slicert_ops
import): MLflow logs it as a "model from code" and runs it in any process that loads
``models:/slicert-cost-model@champion``, whether or not slicert_ops is installed there.
The package imports the same file for its own predictions, so the registered model and
the local pickle predict with the same code.

On-disk layout of a model directory (``NativePredictor.save``)::

    meta.json                   format, family, targets, feature columns, one-hot columns
    <target>.ubj | <target>.txt one booster per target (XGBoost UBJSON | LightGBM text)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = "slicert-costmodel/1"
PREDICT_THREADS = 2


def prepare_matrix(frame: pd.DataFrame, feature_columns: list[str],
                   onehot_columns: list[str]) -> np.ndarray:
    """Feature frame -> float64 matrix in the model's column order.

    Missing numeric columns become NaN (the trees' "missing" branch); missing one-hot
    columns become 0; extra columns are ignored; booleans count as 0/1.
    """
    data: dict[str, np.ndarray] = {}
    onehot = set(onehot_columns)
    n = len(frame)
    for col in feature_columns:
        if col in frame.columns:
            values = frame[col]
            if values.dtype == bool or str(values.dtype) == "boolean":
                values = values.astype("float64")
            arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            if col in onehot:
                arr = np.nan_to_num(arr, nan=0.0)
        else:
            arr = np.zeros(n) if col in onehot else np.full(n, np.nan)
        data[col] = arr
    if not feature_columns:
        return np.empty((n, 0))
    return np.column_stack([data[c] for c in feature_columns])


class NativePredictor:
    """One booster per target over a fixed list of feature columns."""

    def __init__(self, family: str, feature_columns: list[str], targets: list[str],
                 boosters: dict[str, Any], onehot_columns: list[str] | None = None,
                 log_target: bool = True) -> None:
        if family not in ("xgboost", "lightgbm"):
            raise ValueError(f"unknown model family {family!r}")
        self.family = family
        self.feature_columns = list(feature_columns)
        self.targets = list(targets)
        self.boosters = dict(boosters)
        self.onehot_columns = list(onehot_columns or [])
        self.log_target = log_target

    # -- prediction -------------------------------------------------------------------
    def predict_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for target in self.targets:
            booster = self.boosters[target]
            if self.family == "xgboost":
                import xgboost as xgb

                raw = booster.predict(xgb.DMatrix(matrix, missing=np.nan))
            else:
                raw = booster.predict(matrix, num_threads=PREDICT_THREADS)
            raw = np.asarray(raw, dtype="float64")
            values = np.expm1(raw) if self.log_target else raw
            out[target] = np.clip(values, 0.0, None)
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame(frame)
        matrix = prepare_matrix(frame, self.feature_columns, self.onehot_columns)
        return pd.DataFrame(self.predict_matrix(matrix), index=frame.index,
                            columns=self.targets)

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for target in self.targets:
            if self.family == "xgboost":
                name = f"{target}.ubj"
                self.boosters[target].save_model(str(directory / name))
            else:
                name = f"{target}.txt"
                self.boosters[target].save_model(str(directory / name))
            files[target] = name
        meta = {"format": FORMAT, "family": self.family, "targets": self.targets,
                "feature_columns": self.feature_columns,
                "onehot_columns": self.onehot_columns, "log_target": self.log_target,
                "files": files}
        (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> NativePredictor:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}/meta.json: format {meta.get('format')!r}, "
                             f"expected {FORMAT!r}")
        boosters = {}
        for target, name in meta["files"].items():
            path = str(directory / name)
            if meta["family"] == "xgboost":
                import xgboost as xgb

                booster = xgb.Booster()
                booster.load_model(path)
                booster.set_param({"nthread": PREDICT_THREADS})
            else:
                import lightgbm as lgb

                booster = lgb.Booster(model_file=path)
            boosters[target] = booster
        return cls(meta["family"], meta["feature_columns"], meta["targets"], boosters,
                   meta.get("onehot_columns"), meta.get("log_target", True))


# Executed only when MLflow loads this file as a "model from code" (it imports it under a
# generated module name); importing it as part of slicert_ops does not import mlflow.
if __name__ != "slicert_ops.costmodel.pyfunc_model":
    import mlflow.models
    from mlflow.pyfunc import PythonModel

    class SliceRTCostModelPyfunc(PythonModel):
        """pyfunc: feature frame -> DataFrame[kernel_cycles, max_preemption_latency_cycles]."""

        def load_context(self, context) -> None:
            self.predictor = NativePredictor.load(context.artifacts["cost_model"])

        def predict(self, context, model_input: pd.DataFrame,
                    params: dict | None = None) -> pd.DataFrame:
            return self.predictor.predict(pd.DataFrame(model_input))

    mlflow.models.set_model(SliceRTCostModelPyfunc())
