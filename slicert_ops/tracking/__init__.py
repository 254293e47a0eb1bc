"""MLflow + S3 logging of sweeps and runs, and `slicert sync`.

    from slicert_ops.tracking import Tracker, sync
    tracker = Tracker()                     # MLFLOW_TRACKING_URI or the local services
    parent = tracker.open_sweep(experiment_name, manifest, out_dir)
    run_id = tracker.log_run(parent, run_dir, validation)
    tracker.close_sweep(parent, "ok", report_dir)

Importing this package imports neither mlflow nor the S3 client (minio): the S3 store is
``slicert_ops.tracking.s3`` (S3Settings, S3Store).
"""

from __future__ import annotations

from slicert_ops.tracking.mlflow_log import Tracker
from slicert_ops.tracking.retry import ServiceUnavailable
from slicert_ops.tracking.sync import sync

__all__ = ["ServiceUnavailable", "Tracker", "preflight", "sync"]


def preflight(tracking_uri: str | None = None) -> None:
    """Raise ServiceError (naming MLflow or the object store, and the fix) unless the tracking
    services answer. For `slicert run --track`."""
    Tracker(tracking_uri).check()
