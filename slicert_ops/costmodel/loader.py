"""Loading the champion cost model in workers.

    from slicert_ops.costmodel.loader import load_champion
    from slicert_ops.costmodel.features import candidate_features, feature_frame

    champion = load_champion()              # None (reason logged) when unavailable
    if champion:
        X = feature_frame([candidate_features(c.manifest, c.tvm_config) for c in batch])
        pred = champion.predict(X)  # DataFrame[kernel_cycles, max_preemption_latency_cycles]
        # or, keyed by candidate id, ready for the run manifest's "prediction":
        preds = champion.predict_candidates({c.id: candidate_features(
            {"operator": c.operator, "schedule": c.schedule, "runner": c.runner,
             "versions": c.versions}, {"features": codegen.features(op, sched)}) for c in batch})

Called once per batch: the alias is looked up each time (one REST call) and the model is
downloaded only when the champion version changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from slicert_ops.costmodel import registry
from slicert_ops.costmodel.features import feature_frame

log = logging.getLogger("slicert.costmodel")

_cache: dict[tuple[str, str, str], ChampionModel] = {}
_lock = threading.Lock()


@dataclass
class ChampionModel:
    """The registered model version holding the ``champion`` alias."""

    name: str
    version: str
    run_id: str | None
    feature_columns: list[str]
    targets: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    _pyfunc: Any = field(default=None, repr=False)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def score(self) -> float | None:
        try:
            return float(self.tags.get(registry.TAG + "score", "nan"))
        except ValueError:
            return None

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Feature frame (see features.candidate_features) -> predicted cycles per row.

        Columns the model does not know are ignored, missing ones count as missing.
        """
        frame = pd.DataFrame(features)
        keep = [c for c in frame.columns if c in set(self.feature_columns)]
        frame = frame[keep].apply(pd.to_numeric, errors="coerce").astype("float64")
        out = pd.DataFrame(self._pyfunc.predict(frame))
        out.index = features.index
        return out[self.targets] if set(self.targets) <= set(out.columns) else out

    def predict_candidates(self, features_by_id: Mapping[str, Mapping[str, float]]
                           ) -> dict[str, dict[str, float]]:
        """``{candidate_id: candidate_features(...)}`` -> ``{candidate_id:
        {"predicted_kernel_cycles": .., "predicted_max_preemption_latency_cycles": ..}}``."""
        ids = list(features_by_id)
        if not ids:
            return {}
        pred = self.predict(feature_frame([features_by_id[i] for i in ids]))
        return {cid: {f"predicted_{t}": round(float(pred.iloc[k][t]), 1) for t in pred.columns}
                for k, cid in enumerate(ids)}


def _input_columns(pyfunc) -> list[str]:
    schema = pyfunc.metadata.get_input_schema()
    return [c.name for c in schema.inputs] if schema is not None else []


def _output_columns(pyfunc) -> list[str]:
    schema = pyfunc.metadata.get_output_schema()
    return [c.name for c in schema.inputs] if schema is not None else []


def load_champion(name: str = registry.MODEL_NAME, alias: str = registry.ALIAS,
                  use_cache: bool = True) -> ChampionModel | None:
    """The current champion, or None with the reason logged (warning level)."""
    uri = registry.tracking_uri()
    if uri is None:
        log.warning("no cost model: MLFLOW_TRACKING_URI is not set")
        return None
    reason = registry.unreachable_reason(uri, timeout=3.0)
    if reason:
        log.warning("no cost model: %s", reason)
        return None
    try:
        mlflow = registry.import_mlflow()
        mlclient = mlflow.MlflowClient(tracking_uri=uri)
        mv = registry.champion_version(mlclient, name, alias)
        if mv is None:
            log.warning("no cost model: registered model %s has no %r alias yet "
                        "(train one with `slicert train`)", name, alias)
            return None
        key = (uri, name, str(mv.version))
        with _lock:
            if use_cache and key in _cache:
                return _cache[key]
            pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
            model = ChampionModel(name=name, version=str(mv.version), run_id=mv.run_id,
                                  feature_columns=_input_columns(pyfunc),
                                  targets=_output_columns(pyfunc), tags=dict(mv.tags),
                                  _pyfunc=pyfunc)
            _cache.clear()
            _cache[key] = model
        log.info("cost model: %s v%s (%s)", name, mv.version, model.model_uri)
        return model
    except Exception as exc:  # a worker must keep going without a model
        log.warning("no cost model: loading %s@%s failed: %s", name, alias, exc)
        return None
