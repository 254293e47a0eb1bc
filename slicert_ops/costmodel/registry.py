"""MLflow side of the cost model: tracking run, pyfunc model, registry, champion alias.

MLflow is used only when ``MLFLOW_TRACKING_URI`` is set (clients need nothing else: the
server proxies the artifact store). mlflow is imported lazily: it costs seconds.

Registered model ``slicert-cost-model``; the alias ``champion`` marks the version workers
load. A version is registered only when training promotes it (first-champion | promoted);
a model that loses (kept-champion) stays a candidate in its MLflow run (tag
``slicert.candidate = true``). Versions and runs carry tags ``slicert.*``: family, score,
``slicert.decision``, ``slicert.reason``, ``slicert.compared_score`` /
``slicert.champion_score`` (both on the same held-out candidates), ``slicert.champion_version``;
``slicert model promote`` (forced, no comparison) adds ``slicert.forced_promotion``.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from slicert_ops.errors import InputError, ServiceError
from slicert_ops.tracking.http_settings import configure_mlflow_http

MODEL_NAME = "slicert-cost-model"
EXPERIMENT = "slicert-cost-model"
ALIAS = "champion"
TAG = "slicert."
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
# The pyfunc needs only these (pinned versions are added from the running environment).
PYFUNC_REQUIREMENTS = ("mlflow", "numpy", "pandas", "xgboost-cpu", "lightgbm")

log = logging.getLogger("slicert.costmodel")


def tracking_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or None


def unreachable_reason(uri: str, timeout: float = 5.0) -> str | None:
    """None when an http(s) tracking server answers /health (other URIs: not checked).

    Checked up front because the MLflow client retries a dead server for minutes.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return None
            return f"MLflow at {uri} answered /health with HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"MLflow at {uri} is not reachable ({reason})"


def import_mlflow():
    """mlflow, with telemetry off and HTTP retries short (its defaults wait minutes on a dead
    server); explicit user settings win (tracking/http_settings.py)."""
    configure_mlflow_http()
    import mlflow

    return mlflow


def client(required: bool = True):
    """An MlflowClient for MLFLOW_TRACKING_URI; ServiceError when unset or down."""
    uri = tracking_uri()
    if uri is None:
        raise ServiceError("MLFLOW_TRACKING_URI is not set: the model registry needs an MLflow "
                           "server (e.g. export MLFLOW_TRACKING_URI=http://127.0.0.1:5000)")
    reason = unreachable_reason(uri)
    if reason:
        raise ServiceError(reason + " (start the services, or check MLFLOW_TRACKING_URI)")
    mlflow = import_mlflow()
    return mlflow.MlflowClient(tracking_uri=uri)


def _pip_requirements() -> list[str]:
    from importlib import metadata

    reqs = []
    for dist in PYFUNC_REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist.replace("-cpu", ""))
    return reqs


def signature_for(feature_columns: list[str], targets: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # Inputs are optional: a frame lacking a feature predicts with it missing (NaN / one-hot 0).
    inputs = Schema([ColSpec("double", c, required=False) for c in feature_columns])
    outputs = Schema([ColSpec("double", t) for t in targets])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc(model, example: pd.DataFrame, native_dir: Path,
               registered_model_name: str | None):
    """Log the cost model as a pyfunc in the active run (and register it when named)."""
    mlflow = import_mlflow()
    model.save_native(native_dir)
    example = example[model.feature_columns].astype("float64").head(3)
    return mlflow.pyfunc.log_model(
        name="cost_model",
        python_model=str(PYFUNC_FILE),
        artifacts={"cost_model": str(native_dir)},
        signature=signature_for(model.feature_columns, model.predictor.targets),
        input_example=example,
        pip_requirements=_pip_requirements(),
        registered_model_name=registered_model_name,
        metadata={"slicert_family": model.family,
                  "slicert_feature_columns": len(model.feature_columns)},
    )


def champion_version(mlclient, name: str = MODEL_NAME, alias: str = ALIAS):
    """The ModelVersion holding the alias, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlclient.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def load_version_pyfunc(name: str, version: str | int):
    mlflow = import_mlflow()
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def set_decision_tags(mlclient, name: str, version: str | int, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = "none"
        elif isinstance(value, float):
            value = f"{value:.6f}"
        mlclient.set_model_version_tag(name, str(version), TAG + key, str(value))


def list_versions(mlclient, name: str = MODEL_NAME) -> list:
    versions = mlclient.search_model_versions(f"name = '{name}'")
    return sorted(versions, key=lambda v: int(v.version))


def get_version(mlclient, name: str, version: str | int):
    from mlflow.exceptions import MlflowException

    try:
        return mlclient.get_model_version(name, str(version))
    except MlflowException as exc:
        raise InputError(f"model {name} has no version {version}",
                         fix="see `slicert model list`") from exc


def promote(mlclient, name: str, version: str | int) -> str | None:
    """Force the champion alias onto version (no score comparison); returns the previous
    champion version. The training decision tag stays; ``slicert.forced_promotion`` records
    when and over which version."""
    import time

    target = get_version(mlclient, name, version)
    previous = champion_version(mlclient, name)
    mlclient.set_registered_model_alias(name, ALIAS, str(target.version))
    was = f"v{previous.version}" if previous else "none"
    set_decision_tags(mlclient, name, target.version, {
        "forced_promotion": f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} (previous champion {was})",
    })
    return previous.version if previous else None
