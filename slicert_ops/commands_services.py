"""`slicert services {up,down,status,env}` and `slicert sync`."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    svc = subparsers.add_parser(
        "services", help="local S3 object store + MLflow tracking server",
        description="Start, stop and inspect the local services: SeaweedFS (S3, auth on) and "
                    "the MLflow tracking server (SQLite, artifacts in S3), bound to 127.0.0.1. "
                    "State: $SLICERT_HOME/services or <repo>/.slicert/services. Ports: "
                    "SLICERT_S3_PORT (8333, uses 10 ports from it), SLICERT_MLFLOW_PORT (5000).")
    sub = svc.add_subparsers(dest="services_command", required=True, metavar="ACTION")
    p = sub.add_parser("up", help="start the services (idempotent) and wait until healthy")
    p.set_defaults(func=_up)
    p = sub.add_parser("down", help="stop the services (data is kept)")
    p.set_defaults(func=_down)
    p = sub.add_parser("status", help="show state and health (exit 0 only if both healthy)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)
    p = sub.add_parser("env", help="print `export NAME=value` lines: eval \"$(slicert services "
                                   "env)\"")
    p.add_argument("--reveal", action="store_true",
                   help="print the secret key even when stdout is a terminal")
    p.set_defaults(func=_env)

    s = subparsers.add_parser(
        "sync", help="upload run folders not yet tracked to MLflow/S3",
        description="Log every run folder under RESULTS_DIR that has no .tracked mark "
                    "(idempotent: no duplicate MLflow runs).")
    s.add_argument("results_dir", nargs="?", default="results",
                   help="folder holding <experiment>/run_NNNN/ (default: results)")
    s.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    s.set_defaults(func=_sync)


def _up(args: argparse.Namespace) -> int:
    from slicert_ops.services import ServicesConfig, up

    cfg = ServicesConfig.from_env()
    print(f"starting services (state in {cfg.state_dir}) ...", file=sys.stderr)
    rep = up(cfg)
    for key, label in (("s3", "S3 object store (SeaweedFS)"), ("mlflow", "MLflow server")):
        r = rep[key]
        print(f"{label:30s} {r['action']:16s} pid {r['pid']:<7d} {r['url']}  "
              f"(healthy after {r['ready_s']:.1f} s)")
    if rep["credentials_created"]:
        print(f"credentials generated in {cfg.credentials_file} (mode 0600, git-ignored)")
    print(f"bucket s3://{cfg.bucket}; artifacts in {cfg.artifacts_destination}")
    from slicert_ops.tracking.links import experiments_url

    print(f"MLflow UI (machine-learning view): {experiments_url(rep['mlflow']['url'])}")
    print('use them with: eval "$(slicert services env)"')
    return 0


def _down(args: argparse.Namespace) -> int:
    from slicert_ops.services import down

    rep = down()
    for key, label in (("mlflow", "MLflow server"), ("s3", "S3 object store (SeaweedFS)")):
        print(f"{label:30s} {rep[key]}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from slicert_ops.services import status

    st = status()
    healthy = all(st[k]["healthy"] for k in ("s3", "mlflow"))
    if args.json:
        print(json.dumps(st, indent=1))
        return 0 if healthy else 3
    for key, label in (("s3", "S3 object store (SeaweedFS)"), ("mlflow", "MLflow server")):
        r = st[key]
        pid = f"pid {r['pid']}" if r["pid"] else "-"
        health = "healthy" if r["healthy"] else f"NOT healthy ({r['detail']})"
        print(f"{label:30s} {r['state']:8s} {pid:10s} {r['url']:24s} {health}")
    print(f"state dir: {st['state_dir']}")
    if st["access_key"]:
        print(f"access key: {st['access_key']}  secret: {st['secret_key']}")
    if not healthy:
        print("start them with `slicert services up`", file=sys.stderr)
    return 0 if healthy else 3


def _env(args: argparse.Namespace) -> int:
    from slicert_ops.services import env_lines

    reveal = args.reveal or not sys.stdout.isatty()
    for line in env_lines(reveal=reveal):
        print(line)
    if not reveal:
        print('# secret masked on a terminal: eval "$(slicert services env)" or --reveal')
    return 0


def _sync(args: argparse.Namespace) -> int:
    from slicert_ops.tracking.sync import sync

    progress = None if args.quiet else (lambda line: print(f"  {line}"))
    counts = sync(args.results_dir, progress=progress)
    print(f"sync: {counts['found']} run folders, {counts['already_tracked']} already tracked, "
          f"{counts['uploaded']} uploaded ({counts['invalid']} logged as failed/invalid)")
    return 0
