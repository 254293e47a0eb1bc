"""Shared fixtures. The real S3 + MLflow services fixtures live in conftest_services.py."""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

pytest_plugins = ["conftest_services"]
