"""`CostModel`: the small interface every cost model follows (after TVM meta_schedule's).

    model = make_model("xgboost", seed=0).fit(X, y)    # X: feature frame, y: TARGETS frame
    model.predict(X) -> DataFrame[TARGETS]              # cycles, same index as X
    model.save("artifacts/cost_model.pkl"); CostModel.load(path)

The pickle written by ``save`` is a dict ``{"format", "model", "feature_columns",
"metadata"}``: the model object itself, its feature list and what ``train`` recorded
(versions, data, metrics).
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd

from slicert_ops.errors import InputError

PICKLE_FORMAT = "slicert-costmodel-pickle/1"


class CostModel(ABC):
    """Predicts TARGETS (cycles) from a feature frame."""

    family: str = "abstract"

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}

    @property
    @abstractmethod
    def feature_columns(self) -> list[str]: ...

    @abstractmethod
    def fit(self, X: pd.DataFrame, y: pd.DataFrame) -> CostModel: ...

    @abstractmethod
    def predict(self, X: pd.DataFrame) -> pd.DataFrame: ...

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        bundle = {"format": PICKLE_FORMAT, "model": self,
                  "feature_columns": self.feature_columns, "metadata": self.metadata}
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
        return path

    @staticmethod
    def load_bundle(path: str | Path) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise InputError("cost model file not found", file=str(path),
                             fix="train one with `slicert train --output PATH`")
        with open(path, "rb") as fh:
            bundle = pickle.load(fh)
        if not isinstance(bundle, dict) or bundle.get("format") != PICKLE_FORMAT:
            raise InputError(f"not a {PICKLE_FORMAT} file", file=str(path))
        return bundle

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        return cls.load_bundle(path)["model"]
