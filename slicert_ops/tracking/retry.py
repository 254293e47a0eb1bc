"""Bounded retries with exponential backoff, and the errors that name the service at fault.

Environment (optional): SLICERT_RETRY_ATTEMPTS (default 5), SLICERT_RETRY_BASE_DELAY_S
(default 0.5), SLICERT_RETRY_MAX_DELAY_S (default 8). With the defaults a dead service is
given up on after ~7.5 s of back-off (0.5 + 1 + 2 + 4) plus the attempts themselves.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from slicert_ops.errors import ServiceError

log = logging.getLogger(__name__)
T = TypeVar("T")

S3_LABEL = "Object store (S3)"
MLFLOW_LABEL = "MLflow"


class ServiceUnavailable(ServiceError):
    """A service is down, restarting or refused us. ``service`` is "s3" or "mlflow"."""

    def __init__(self, service: str, url: str, message: str, *, transient: bool = True) -> None:
        self.service, self.url, self.transient = service, url, transient
        super().__init__(message)


def down_error(service: str, url: str, detail: str = "") -> ServiceUnavailable:
    label = S3_LABEL if service == "s3" else MLFLOW_LABEL
    why = f" ({detail})" if detail else ""
    return ServiceUnavailable(
        service, url,
        f"{label} at {url} is not answering{why}: start it with `slicert services up` "
        "(measurements stay on local disk; `slicert sync` uploads them later)")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    factor: float = 2.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        def num(name: str, default: float) -> float:
            try:
                return float(os.environ.get(name, default))
            except ValueError:
                return default

        return cls(attempts=max(1, int(num("SLICERT_RETRY_ATTEMPTS", 5))),
                   base_delay_s=max(0.0, num("SLICERT_RETRY_BASE_DELAY_S", 0.5)),
                   max_delay_s=max(0.0, num("SLICERT_RETRY_MAX_DELAY_S", 8.0)))

    def delay(self, attempt: int) -> float:
        """Back-off before retry number ``attempt`` (1-based), with +-20 % jitter."""
        d = min(self.max_delay_s, self.base_delay_s * self.factor ** (attempt - 1))
        return d * random.uniform(0.8, 1.2)


def call_with_retries(fn: Callable[[], T], *, what: str, policy: RetryPolicy,
                      classify: Callable[[BaseException], ServiceError | None],
                      on_give_up: Callable[[BaseException, ServiceError], ServiceError]
                      | None = None) -> T:
    """Run ``fn``; on an error that ``classify`` maps to a *transient* ServiceUnavailable,
    retry with back-off up to ``policy.attempts`` times, then raise that ServiceError.
    Errors that classify to a non-transient ServiceError are raised at once; errors that
    classify to None propagate unchanged.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            err = classify(exc)
            if err is None:
                raise
            transient = getattr(err, "transient", False)
            if not transient:
                raise err from None
            if attempt >= policy.attempts:
                if on_give_up is not None:
                    err = on_give_up(exc, err)
                err.args = (f"{err.args[0]} [{what}: gave up after {attempt} attempts]",)
                raise err from None
            delay = policy.delay(attempt)
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, err, attempt,
                        policy.attempts - 1, delay)
            time.sleep(delay)
