"""Which service is down? Health checks of MLflow and the object store, and the
classification of a failed MLflow request (the retry policy's ``classify``)."""

from __future__ import annotations

import sys

from slicert_ops.errors import ServiceError
from slicert_ops.tracking.retry import (
    MLFLOW_LABEL,
    RetryPolicy,
    ServiceUnavailable,
    down_error,
)


class ServiceHealth:
    """MLflow at ``tracking_uri`` and the object store (settings given, or from the
    environment when set there; None: not checked)."""

    def __init__(self, tracking_uri: str, s3_settings=None) -> None:
        self.tracking_uri = tracking_uri
        self._s3_settings = s3_settings
        self._s3_checked = s3_settings is not None

    def s3(self):
        """The object store's settings, or None when they are not known."""
        if not self._s3_checked:
            self._s3_checked = True
            from slicert_ops.tracking.s3 import settings_from_env

            try:
                self._s3_settings = settings_from_env(required=False)
            except ServiceError:
                self._s3_settings = None
        return self._s3_settings

    def s3_down(self) -> ServiceError | None:
        """Probe the object store directly (when its settings are known): its error, or None."""
        settings = self.s3()
        if settings is None:
            return None
        from slicert_ops.tracking.s3 import S3Store

        return S3Store(settings, policy=RetryPolicy(attempts=1), timeout=3).probe()

    def mlflow_up(self, timeout: float = 3) -> tuple[bool, str]:
        """(MLflow answers /health, what was seen)."""
        import requests

        try:
            resp = requests.get(f"{self.tracking_uri}/health", timeout=timeout)
            return resp.status_code == 200, f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            return False, type(exc).__name__

    def check(self) -> None:
        """Raise ServiceError naming the service unless MLflow (and the object store, when
        its settings are known) answer."""
        if self.tracking_uri.startswith(("http://", "https://")):
            ok, detail = self.mlflow_up(timeout=5)
            if not ok:
                raise down_error("mlflow", self.tracking_uri, detail)
        s3 = self.s3_down()
        if s3 is not None:
            raise s3

    def blame(self, detail: str) -> ServiceError:
        """MLflow failed a request: is MLflow down, or the object store behind it?"""
        if self.tracking_uri.startswith("http") and self.mlflow_up()[0]:
            s3 = self.s3_down()
            if s3 is not None:
                return s3
            return ServiceUnavailable(
                "mlflow", self.tracking_uri,
                f"{MLFLOW_LABEL} at {self.tracking_uri} failed a request ({detail}): see "
                "`slicert services status` and the MLflow server log", transient=True)
        return down_error("mlflow", self.tracking_uri, detail)

    def classify(self, exc: BaseException) -> ServiceError | None:
        """The ServiceError a failed request means (None: not a service problem)."""
        import requests

        from slicert_ops.tracking.mlflow_rest import RestError

        mlflow_exc = getattr(sys.modules.get("mlflow.exceptions"), "MlflowException", RestError)
        chain, e = [], exc
        while e is not None and len(chain) < 8:
            chain.append(e)
            e = e.__cause__ or e.__context__
        for e in chain:
            if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                              ConnectionError, TimeoutError)):
                return self.blame(type(e).__name__)
        if isinstance(exc, (RestError, mlflow_exc)):
            msg = str(exc)
            if "failed with exception" in msg or "failed with timeout" in msg:
                return self.blame("connection failed")
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return None
            status = exc.get_http_status_code()
            if status >= 500 or exc.error_code in ("TEMPORARILY_UNAVAILABLE",
                                                   "REQUEST_LIMIT_EXCEEDED"):
                return self.blame(msg.splitlines()[0][:200])
            return ServiceUnavailable(
                "mlflow", self.tracking_uri,
                f"{MLFLOW_LABEL} at {self.tracking_uri} refused the request: {msg[:500]}",
                transient=False)
        return None
