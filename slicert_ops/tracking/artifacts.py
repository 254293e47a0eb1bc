"""Where a run's files go: straight to S3, or through the MLflow server.

The MLflow server proxies artifacts (``--artifacts-destination s3://B/P``; a run's
artifact_uri is ``mlflow-artifacts:/<exp>/<run>/artifacts``, stored at
``s3://B/P/<exp>/<run>/artifacts``). When that mapping is verified -- the sweep's
``sweep/manifest.json``, uploaded through the server, is found at the mapped key with our own
S3 settings -- run folders are written straight to that location with the S3 client, files in
parallel (the MLflow UI and API list and serve them as before); otherwise, or with
``SLICERT_ARTIFACT_UPLOAD=proxy``, they go through the server. ``SLICERT_ARTIFACTS_DESTINATION``
names the server's destination when it is not ``s3://<bucket>/mlflow``.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from slicert_ops.tracking.folders import TRACKED_FILE

log = logging.getLogger(__name__)

ARTIFACT_MODE_ENV = "SLICERT_ARTIFACT_UPLOAD"         # "proxy": always through MLflow
ARTIFACT_DEST_ENV = "SLICERT_ARTIFACTS_DESTINATION"   # the server's --artifacts-destination
PROBE_ARTIFACT = "sweep/manifest.json"                # uploaded through MLflow by open_sweep
SKIP_UPLOAD = {TRACKED_FILE}

Files = list[tuple[Path, "str | None"]]  # (file, artifact folder or None for the root)


def run_files(run_dir: Path, verdict: Any = None) -> Files:
    """A run folder's files (not .tracked, not half-written .part files), plus the verdict's
    reports when they live outside the folder (under ``validation/``). The run's timeline
    (``slicert timeline``: timeline.json + timeline.html) is written first when missing."""
    from slicert_ops.report.timeline import ensure_timeline

    ensure_timeline(run_dir)
    files: Files = [(p, p.parent.relative_to(run_dir).as_posix() if p.parent != run_dir
                     else None)
                    for p in sorted(run_dir.rglob("*"))
                    if p.is_file() and p.name not in SKIP_UPLOAD and ".part" not in p.name]
    for rp in (getattr(verdict, "report_html", None), getattr(verdict, "report_json", None)):
        if rp and Path(rp).exists() and run_dir.resolve() not in Path(rp).resolve().parents:
            files.append((Path(rp), "validation"))
    return files


def report_files(report_dir: Path) -> Files:
    """A sweep report folder's files, under ``report/`` (not the hidden ones: the plots'
    content keys, temporary files)."""
    return [(p, "report/" + p.parent.relative_to(report_dir).as_posix()
             if p.parent != report_dir else "report")
            for p in sorted(report_dir.rglob("*"))
            if p.is_file() and not p.name.startswith(".")]


class ArtifactRouter:
    """Uploads files to a run's artifact root. ``ml(what, fn)`` calls MLflow with retries,
    ``artifact_uri(run_id)`` looks a run's artifact_uri up, ``pool(name, size)`` gives a
    shared thread pool."""

    def __init__(self, client: Any, health: Any, policy: Any,
                 ml: Callable[[str, Callable[[], Any]], Any],
                 artifact_uri: Callable[[str], str | None],
                 pool: Callable[[str, int], ThreadPoolExecutor], *, upload_threads: int = 8,
                 connections: int = 12) -> None:
        self.client, self.health, self.policy = client, health, policy
        self._ml, self._artifact_uri, self._pool = ml, artifact_uri, pool
        self.upload_threads = max(1, upload_threads)
        self.connections = connections
        self.direct: bool | None = None  # straight to S3 (verified) / through MLflow / unknown
        self.store = None

    def root(self, artifact_uri: str) -> tuple[str, str] | None:
        """(bucket, key prefix) in S3 where the server keeps this artifact_uri, or None."""
        uri = urlparse(artifact_uri or "")
        if uri.scheme == "s3":
            return uri.netloc, uri.path.strip("/")
        if uri.scheme != "mlflow-artifacts":
            return None
        settings = self.health.s3()
        dest = os.environ.get(ARTIFACT_DEST_ENV)
        if not dest and settings is not None:
            from slicert_ops.services.config import ARTIFACT_PREFIX

            dest = f"s3://{settings.bucket}/{ARTIFACT_PREFIX}"
        d = urlparse(dest or "")
        if d.scheme != "s3" or not d.netloc:
            return None
        return d.netloc, "/".join(p for p in (d.path.strip("/"), uri.path.strip("/")) if p)

    def verify_direct(self, parent_run_id: str) -> None:
        """Decide once whether run folders can be written straight to S3: the parent's
        PROBE_ARTIFACT (uploaded through the MLflow server) must be where we expect it."""
        if self.direct is not None:
            return
        if os.environ.get(ARTIFACT_MODE_ENV, "").strip().lower() == "proxy":
            self.direct = False
            return
        settings = self.health.s3()
        root = self.root(self._artifact_uri(parent_run_id) or "")
        if settings is None or root is None or root[0] != settings.bucket:
            self.direct = False
            return
        from slicert_ops.tracking.s3 import S3Store, object_exists

        store = S3Store(settings, policy=self.policy, connections=self.connections)
        key = f"{root[1]}/{PROBE_ARTIFACT}"
        if not store._call("S3 stat artifact",
                           lambda: object_exists(store.client, root[0], key)):
            log.info("artifacts go through the MLflow server (%s not found in S3)", key)
            self.direct = False
            return
        self.store = store
        self.direct = True  # each run's key prefix comes from its own artifact_uri

    def _direct_root(self, run_id: str, artifact_uri: str | None) -> tuple[str, str] | None:
        if self.direct is not True or self.store is None:
            return None
        root = self.root(artifact_uri or self._artifact_uri(run_id) or "")
        if root is None or root[0] != self.store.bucket:
            return None
        return root

    def upload(self, run_id: str, files: Files, artifact_uri: str | None = None) -> None:
        if not files:
            return
        root = self._direct_root(run_id, artifact_uri)
        if root is not None:
            store, (bucket, prefix) = self.store, root

            def one(item: tuple[Path, str | None]) -> None:
                path, art_dir = item
                rel = f"{art_dir}/{path.name}" if art_dir else path.name
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                store._call(f"S3 upload {rel}", lambda: store.client.fput_object(
                    bucket, f"{prefix}/{rel}", str(path), content_type=ctype))
            threads = self.upload_threads
        else:
            uri = artifact_uri or self._artifact_uri(run_id)

            def one(item: tuple[Path, str | None]) -> None:
                path, art_dir = item
                self._ml(f"upload {path.name}", lambda: self.client.log_artifact(
                    run_id, str(path), art_dir, artifact_uri=uri))
            threads = min(4, self.upload_threads)

        one(files[0])  # a dead service shows here once, not once per file
        rest = files[1:]
        if len(rest) <= 1 or threads == 1:
            for item in rest:
                one(item)
            return
        pool = self._pool("upload", threads)
        futures = [pool.submit(one, item) for item in rest]
        errors = [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err
