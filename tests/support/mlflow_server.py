"""A real, throw-away MLflow tracking server for tests (SQLite + local proxied artifacts).

    with mlflow_server(tmp_path) as url:   # http://127.0.0.1:<free port>, /health answered
        ...

Artifacts go through the server (``--artifacts-destination``, the same proxied path the
S3-backed deployment uses), so clients need only MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from support.ports import free_port_block

START_TIMEOUT_S = 90


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(workdir: Path) -> Iterator[str]:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port_block()
    url = f"http://127.0.0.1:{port}"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server",
           "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--artifacts-destination", str(workdir / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (workdir / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"MLflow server did not start (rc={proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        # the server runs in its own session: stop its process group (uvicorn workers too)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)  # a throw-away server: no need for a slow graceful stop
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
