"""MLflow + S3 logging of sweeps and runs, and `slicert sync`.

    from slicert_ops.tracking import Tracker, sync
    tracker = Tracker()                     # MLFLOW_TRACKING_URI or the local services
    parent = tracker.open_sweep(experiment_name, manifest, out_dir)
    run_id = tracker.log_run(parent, run_dir, validation)
    tracker.close_sweep(parent, "ok", report_dir)

Imports are lazy: importing this package does not import mlflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slicert_ops.tracking.mlflow_log import Tracker
    from slicert_ops.tracking.s3 import S3Settings, S3Store
    from slicert_ops.tracking.sync import sync

__all__ = ["S3Settings", "S3Store", "ServiceUnavailable", "Tracker", "preflight", "sync"]


def __getattr__(name: str) -> Any:
    if name == "Tracker":
        from slicert_ops.tracking.mlflow_log import Tracker

        return Tracker
    if name in ("S3Settings", "S3Store"):
        from slicert_ops.tracking import s3

        return getattr(s3, name)
    if name == "sync":
        from slicert_ops.tracking.sync import sync

        return sync
    if name == "ServiceUnavailable":
        from slicert_ops.tracking.retry import ServiceUnavailable

        return ServiceUnavailable
    raise AttributeError(name)


def preflight(tracking_uri: str | None = None) -> None:
    """Raise ServiceError (naming MLflow or the object store, and the fix) unless the tracking
    services answer. For `slicert run --track`."""
    from slicert_ops.tracking.mlflow_log import Tracker

    Tracker(tracking_uri).check()
