"""Real SeaweedFS + MLflow server: start, idempotent up, env, auth, binding, status/down."""

from __future__ import annotations

import io
import json
import shlex
import socket
import stat
import time
import urllib.error
import urllib.request

import pytest
from minio import Minio
from minio.error import S3Error

from slicert_ops.errors import ServiceError
from slicert_ops.services import ServicesConfig, down, env_lines, status, up

pytestmark = pytest.mark.services


def test_up_started_both_and_is_idempotent(slicert_services):
    cfg = slicert_services.cfg
    first = slicert_services.up_report
    assert first["s3"]["pid"] and first["mlflow"]["pid"]
    t0 = time.monotonic()
    again = up(cfg)
    assert time.monotonic() - t0 < 10
    assert again["s3"]["action"] == "already running"
    assert again["mlflow"]["action"] == "already running"
    assert again["s3"]["pid"] == status(cfg)["s3"]["pid"]
    assert again["mlflow"]["pid"] == status(cfg)["mlflow"]["pid"]
    assert again["credentials_created"] is False


def test_credentials_file_private_and_not_printed(slicert_services, services_env, run_cli):
    cfg = slicert_services.cfg
    creds = json.loads(cfg.credentials_file.read_text())
    assert stat.S_IMODE(cfg.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.s3_identity_file.stat().st_mode) == 0o600
    rc, out, err = run_cli(["services", "status"])
    assert rc == 0, err
    assert "healthy" in out and creds["access_key"] in out
    assert creds["secret_key"] not in out + err
    rc, out, err = run_cli(["services", "up"])
    assert rc == 0 and creds["secret_key"] not in out + err
    masked = "\n".join(env_lines(cfg, reveal=False))
    assert creds["secret_key"] not in masked


def test_env_output_is_evaluable(slicert_services, services_env, run_cli):
    cfg = slicert_services.cfg
    rc, out, _ = run_cli(["services", "env"])  # stdout is not a terminal: full values
    assert rc == 0
    values = {}
    for line in out.strip().splitlines():
        assert line.startswith("export "), line
        name, _, value = line[len("export "):].partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    creds = json.loads(cfg.credentials_file.read_text())
    assert values["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{cfg.mlflow_port}"
    assert values["SLICERT_S3_ENDPOINT"] == f"http://127.0.0.1:{cfg.s3_port}"
    assert values["SLICERT_S3_BUCKET"] == cfg.bucket
    assert values["SLICERT_S3_ACCESS_KEY"] == creds["access_key"]
    assert values["SLICERT_S3_SECRET_KEY"] == creds["secret_key"]
    assert values["MLFLOW_DISABLE_TELEMETRY"] == "true"
    # the values work: an authenticated client sees the bucket
    client = Minio(f"127.0.0.1:{cfg.s3_port}", access_key=values["SLICERT_S3_ACCESS_KEY"],
                   secret_key=values["SLICERT_S3_SECRET_KEY"], secure=False)
    assert client.bucket_exists(cfg.bucket)


def test_s3_auth_is_on(slicert_services):
    cfg = slicert_services.cfg
    creds = json.loads(cfg.credentials_file.read_text())
    # anonymous HTTP: denied
    for method, path in (("GET", "/"), ("GET", f"/{cfg.bucket}"), ("PUT", "/intruder-bucket"),
                         ("PUT", f"/{cfg.bucket}/x.txt")):
        req = urllib.request.Request(f"{cfg.s3_endpoint}{path}", method=method,
                                     data=b"x" if method == "PUT" else None)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code in (401, 403)
    # wrong secret / unknown key: denied
    for access, secret, code in ((creds["access_key"], "wrong-secret-0123456789",
                                  "SignatureDoesNotMatch"),
                                 ("NOSUCHKEY", "whatever-0123456789", "InvalidAccessKeyId")):
        bad = Minio(f"127.0.0.1:{cfg.s3_port}", access_key=access, secret_key=secret,
                    secure=False)
        with pytest.raises(S3Error) as info:
            bad.put_object(cfg.bucket, "x.txt", io.BytesIO(b"x"), 1)
        assert info.value.code in (code, "AccessDenied")
    # right key: allowed
    good = Minio(f"127.0.0.1:{cfg.s3_port}", access_key=creds["access_key"],
                 secret_key=creds["secret_key"], secure=False)
    good.put_object(cfg.bucket, "auth-check.txt", io.BytesIO(b"ok"), 2)
    assert good.get_object(cfg.bucket, "auth-check.txt").read() == b"ok"


def _listening(port: int) -> list[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, port_hex = parts[1].split(":")
            if parts[3] == "0A" and int(port_hex, 16) == port:
                out.append(addr)
    return out


def test_services_bind_only_localhost(slicert_services):
    cfg = slicert_services.cfg
    ports = list(cfg.weed_ports().values()) + [cfg.mlflow_port]
    for port in ports:
        addrs = _listening(port)
        assert addrs, f"nothing listens on {port}"
        assert set(addrs) == {"0100007F"}, f"port {port} bound to {addrs}, not 127.0.0.1"
    with socket.socket() as s:  # and the ports are not reachable on another address
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.2", cfg.s3_port)) != 0


def test_port_taken_is_a_clear_error(tmp_path):
    from conftest_services import free_port_block

    base = free_port_block(11)
    cfg = ServicesConfig.from_env({"SLICERT_HOME": str(tmp_path), "SLICERT_S3_PORT": str(base),
                                   "SLICERT_MLFLOW_PORT": str(base + 10)})
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 3))
        blocker.listen()
        with pytest.raises(ServiceError) as info:
            up(cfg)
    msg = str(info.value)
    assert f"port {base + 3}" in msg and "already in use" in msg and "SLICERT_S3_PORT" in msg
    st = status(cfg)
    assert st["s3"]["state"] == "stopped" and st["mlflow"]["state"] == "stopped"


def test_bad_port_setting_is_an_input_error():
    from slicert_ops.errors import InputError

    with pytest.raises(InputError, match="SLICERT_MLFLOW_PORT"):
        ServicesConfig.from_env({"SLICERT_MLFLOW_PORT": "fivethousand"})


def test_status_down_up_keeps_data(slicert_services, services_env, run_cli):
    """down stops both cleanly; up brings them back with objects and MLflow data intact."""
    cfg = slicert_services.cfg
    store = slicert_services.s3()
    store.client.put_object(cfg.bucket, "persist/probe.txt", io.BytesIO(b"kept"), 4)
    tracker = slicert_services.tracker()
    exp_id = tracker.experiment_id("persistence-check")

    rc, out, _ = run_cli(["services", "down"])
    assert rc == 0 and "stopped" in out
    st = status(cfg)
    assert st["s3"]["state"] == "stopped" and not st["s3"]["healthy"]
    assert st["mlflow"]["state"] == "stopped" and not st["mlflow"]["healthy"]
    rc, out, err = run_cli(["services", "status"])
    assert rc == 3 and "services up" in err
    assert not list(cfg.run_dir.glob("*.pid"))
    assert down(cfg) == {"mlflow": "not running", "s3": "not running"}

    rep = slicert_services.restart()
    assert rep["s3"]["action"] == "started" and rep["mlflow"]["action"] == "started"
    assert slicert_services.s3().read("persist/probe.txt") == b"kept"
    assert slicert_services.tracker().experiment_id("persistence-check") == exp_id
