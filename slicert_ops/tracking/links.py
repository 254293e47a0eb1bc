"""Links into the MLflow UI that open the machine-learning view.

MLflow 3 opens a fresh browser in its "GenAI" workflow, where an experiment lands on an
empty traces/evaluations page. Its UI honours a ``workflowType`` query parameter (read from
the hash route's query, ``#/experiments/1?workflowType=machine_learning``) and, when none is
given, the experiment tag ``mlflow.experimentKind`` (``custom_model_development`` selects
the runs table). The server has no setting for a default view, so SliceRT does both: every
link it builds or prints carries the parameter, and every experiment it creates carries the
tag (``ML_EXPERIMENT_TAGS``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

WORKFLOW_PARAM = "workflowType=machine_learning"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
ML_EXPERIMENT_TAGS = {EXPERIMENT_KIND_TAG: "custom_model_development"}


def ui_url(env: Mapping[str, str] | None = None) -> str | None:
    """The MLflow address for a browser: $SLICERT_MLFLOW_UI_URL, else $MLFLOW_TRACKING_URI
    (http(s) only), without a trailing slash."""
    env = os.environ if env is None else env
    url = env.get("SLICERT_MLFLOW_UI_URL") or env.get("MLFLOW_TRACKING_URI") or ""
    return url.rstrip("/") if url.startswith(("http://", "https://")) else None


def experiment_url(ui: str | None, experiment_id: str | int | None,
                   run_id: str | None = None) -> str | None:
    """``UI/#/experiments/ID[/runs/RUN]?workflowType=machine_learning`` (None without UI/ID)."""
    if not ui or experiment_id in (None, ""):
        return None
    path = f"{ui.rstrip('/')}/#/experiments/{quote(str(experiment_id))}"
    if run_id:
        path += f"/runs/{quote(str(run_id))}"
    return f"{path}?{WORKFLOW_PARAM}"


def experiments_url(ui: str) -> str:
    """The experiment list, in the machine-learning view."""
    return f"{ui.rstrip('/')}/#/experiments?{WORKFLOW_PARAM}"


def model_url(ui: str | None, name: str, version: str | int | None = None) -> str | None:
    """The registered model (or one version) page."""
    if not ui:
        return None
    path = f"{ui.rstrip('/')}/#/models/{quote(name)}"
    if version is not None:
        path += f"/versions/{quote(str(version))}"
    return f"{path}?{WORKFLOW_PARAM}"
