"""Shared fixtures. The real S3 + MLflow services fixtures live in conftest_services.py."""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# the validation server (validate/server.py) outlives a sweep by this long: not the tests
os.environ.setdefault("SLICERT_VALIDATION_IDLE_S", "5")

pytest_plugins = ["conftest_services"]
