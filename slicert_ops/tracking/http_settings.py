"""The one place that sets the MLflow client's HTTP settings (and telemetry off).

Both MLflow clients of this project read them from the environment: the REST client of the
tracking code (mlflow_rest.py: ``MLFLOW_HTTP_REQUEST_TIMEOUT``) and the ``mlflow`` package
(cost-model registry, model loading). MLflow's defaults retry a dead server for minutes, so
the values are short; the tracking code's own bounded back-off (retry.py) does the rest.
An explicit setting in the environment wins (``setdefault``).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

MLFLOW_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


def configure_mlflow_http(env: MutableMapping[str, str] | None = None) -> None:
    """Put MLFLOW_HTTP_ENV into env (default os.environ) where a value is not set already."""
    env = os.environ if env is None else env
    for name, value in MLFLOW_HTTP_ENV.items():
        env.setdefault(name, value)
