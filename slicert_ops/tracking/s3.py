"""S3 access with the `minio` SDK: works unchanged against MinIO (compose deployment) and
the embedded SeaweedFS store (`slicert services up`).

Settings come from, in order:
  1. SLICERT_S3_ENDPOINT, SLICERT_S3_ACCESS_KEY, SLICERT_S3_SECRET_KEY, SLICERT_S3_BUCKET
  2. MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (what the compose
     deployment gives the MLflow server and workers)
  3. the local services' state dir (credentials.json, SLICERT_S3_PORT, SLICERT_HOME)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error

from slicert_ops.errors import ServiceError
from slicert_ops.tracking.retry import (
    S3_LABEL,
    RetryPolicy,
    ServiceUnavailable,
    call_with_retries,
    down_error,
)

AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
              "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                   "ServerBusy"}


@dataclass(frozen=True)
class S3Settings:
    endpoint: str          # http(s)://host:port
    access_key: str
    secret_key: str
    bucket: str

    def __repr__(self) -> str:
        from slicert_ops.services.s3_keys import mask

        return (f"S3Settings(endpoint={self.endpoint!r}, access_key={self.access_key!r}, "
                f"secret_key={mask(self.secret_key)!r}, bucket={self.bucket!r})")

    __str__ = __repr__


def settings_from_env(env: dict | None = None, *, required: bool = True) -> S3Settings | None:
    env = dict(os.environ if env is None else env)
    endpoint = env.get("SLICERT_S3_ENDPOINT") or env.get("MLFLOW_S3_ENDPOINT_URL")
    access = env.get("SLICERT_S3_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID")
    secret = env.get("SLICERT_S3_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    from slicert_ops.services.config import ServicesConfig

    cfg = ServicesConfig.from_env(env)
    bucket = env.get("SLICERT_S3_BUCKET") or cfg.bucket
    if not (access and secret):
        from slicert_ops.services import s3_keys as credentials

        creds = credentials.load(cfg.credentials_file)
        if creds is not None:
            access, secret = creds.access_key, creds.secret_key
    endpoint = endpoint or cfg.s3_endpoint
    if not (access and secret):
        if not required:
            return None
        raise ServiceError(
            f"{S3_LABEL}: no credentials: set SLICERT_S3_ACCESS_KEY and SLICERT_S3_SECRET_KEY "
            "(for the local store: `eval \"$(slicert services env)\"`, after "
            "`slicert services up`)")
    return S3Settings(endpoint.rstrip("/"), access, secret, bucket)


def make_client(settings: S3Settings, *, timeout: float = 10.0, connections: int = 8) -> Minio:
    url = urlparse(settings.endpoint if "://" in settings.endpoint
                   else f"http://{settings.endpoint}")
    if not url.netloc:
        raise ServiceError(f"{S3_LABEL}: endpoint {settings.endpoint!r} is not a URL: set "
                           "SLICERT_S3_ENDPOINT=http://host:port")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
        retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0),  # we retry ourselves
        maxsize=connections,
    )
    return Minio(url.netloc, access_key=settings.access_key, secret_key=settings.secret_key,
                 secure=url.scheme == "https", region="us-east-1", http_client=http)


def classify(exc: BaseException, settings: S3Settings) -> ServiceError | None:
    """Map a minio / urllib3 exception to a ServiceError naming the object store."""
    url = settings.endpoint
    if isinstance(exc, S3Error):
        if exc.code in AUTH_CODES:
            return ServiceUnavailable(
                "s3", url,
                f"{S3_LABEL} at {url} rejected the credentials ({exc.code}) for access key "
                f"{settings.access_key!r}: check SLICERT_S3_ACCESS_KEY / SLICERT_S3_SECRET_KEY "
                "(for the local store: `eval \"$(slicert services env)\"`)",
                transient=False)
        if exc.code == "NoSuchBucket":
            return ServiceUnavailable(
                "s3", url,
                f"{S3_LABEL} at {url} has no bucket {exc.bucket_name or settings.bucket!r}: run "
                "`slicert services up` (creates it) or set SLICERT_S3_BUCKET", transient=False)
        if exc.code in TRANSIENT_CODES:
            return down_error("s3", url, f"{exc.code}")
        return ServiceUnavailable("s3", url, f"{S3_LABEL} at {url} refused the request: "
                                  f"{exc.code}: {exc.message}", transient=False)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)):
        reason = getattr(exc, "reason", None) or exc
        return down_error("s3", url, type(reason).__name__)
    from minio.error import InvalidResponseError, ServerError

    if isinstance(exc, ServerError):
        return down_error("s3", url, f"HTTP {exc.status_code}")
    if isinstance(exc, InvalidResponseError):
        return down_error("s3", url, "invalid response")
    return None


class S3Store:
    """Thin wrapper: retries, clear errors, bucket ensure, upload / list."""

    def __init__(self, settings: S3Settings | None = None, *, policy: RetryPolicy | None = None,
                 timeout: float = 10.0, connections: int = 8) -> None:
        self.settings = settings or settings_from_env()
        self.policy = policy or RetryPolicy.from_env()
        self.client = make_client(self.settings, timeout=timeout, connections=connections)

    @property
    def bucket(self) -> str:
        return self.settings.bucket

    def _call(self, what: str, fn):
        return call_with_retries(fn, what=what, policy=self.policy,
                                 classify=lambda e: classify(e, self.settings))

    def check(self) -> None:
        """Raise ServiceError unless the store answers, accepts the keys and has the bucket."""
        if not self._call("S3 bucket check", lambda: self.client.bucket_exists(self.bucket)):
            raise ServiceUnavailable(
                "s3", self.settings.endpoint,
                f"{S3_LABEL} at {self.settings.endpoint} has no bucket {self.bucket!r}: run "
                "`slicert services up` (creates it) or set SLICERT_S3_BUCKET", transient=False)

    def probe(self) -> ServiceError | None:
        """One quick authenticated call, no retries: None when healthy, else the error."""
        try:
            self.client.list_buckets()
            return None
        except Exception as exc:  # noqa: BLE001
            return classify(exc, self.settings) or down_error(
                "s3", self.settings.endpoint, type(exc).__name__)

    def healthy(self) -> tuple[bool, str]:
        err = self.probe()
        return (True, "ok") if err is None else (False, str(err))

    def ensure_bucket(self) -> bool:
        return self._call("S3 make bucket", lambda: ensure_bucket(self.client, self.bucket))

    def upload_file(self, path: Path, key: str) -> None:
        self._call(f"S3 upload {key}",
                   lambda: self.client.fput_object(self.bucket, key, str(path)))

    def upload_dir(self, local_dir: Path, prefix: str, *, exclude: tuple[str, ...] = ()) -> int:
        n = 0
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file() and path.name not in exclude:
                rel = path.relative_to(local_dir).as_posix()
                self.upload_file(path, f"{prefix.rstrip('/')}/{rel}")
                n += 1
        return n

    def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        return self._call(f"S3 list {prefix}", lambda: [
            o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix or None,
                                                            recursive=recursive)])

    def iter_objects(self, prefix: str = "") -> Iterator:
        return iter(self._call(f"S3 list {prefix}", lambda: list(
            self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True))))

    def read(self, key: str) -> bytes:
        def get() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"S3 get {key}", get)


def ensure_bucket(client: Minio, bucket: str) -> bool:
    """Create the bucket if missing. Returns True when it was created."""
    if client.bucket_exists(bucket):
        return False
    try:
        client.make_bucket(bucket)
    except S3Error as exc:
        if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise
    return True


def object_exists(client: Minio, bucket: str, key: str) -> bool:
    """True when the object exists, False when the store says it does not (other errors
    propagate)."""
    try:
        client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"):
            return False
        raise
    return True
