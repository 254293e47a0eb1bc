"""`slicert up | down | env | submit | images`: the embedded Airflow stack and its REST API."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError, ServiceError


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser(
        "up", help="start the embedded stack: Airflow + object store + MLflow (127.0.0.1)",
        description="Start Airflow (api-server, scheduler, dag-processor, triggerer; "
        "LocalExecutor, SQLite, login required) and the object store + MLflow, all on "
        "127.0.0.1; return once every component is healthy and the DAGs of experiments/ are "
        "parsed. Idempotent. State, logs and the generated password file live under "
        "$SLICERT_HOME/airflow (default .slicert/airflow).")
    u.add_argument("--port", type=int, default=None,
                   help="api-server port (default $SLICERT_AIRFLOW_PORT or 8080)")
    u.add_argument("--parallelism", type=int, default=None,
                   help="task slots of the LocalExecutor (default: CPU count, at least 2)")
    u.add_argument("--timeout", type=float, default=240.0, help="start-up timeout, seconds")
    u.add_argument("--no-services", action="store_true",
                   help="do not start the object store + MLflow (tasks then run untracked)")
    u.add_argument("--no-wait-dags", action="store_true",
                   help="return when healthy, without waiting for the DAGs to be parsed")
    u.set_defaults(func=cmd_up)

    d = sub.add_parser("down", help="stop everything `slicert up` started (data are kept)")
    d.add_argument("--keep-services", action="store_true",
                   help="stop Airflow only; leave the object store + MLflow running")
    d.set_defaults(func=cmd_down)

    e = sub.add_parser("env", help="print `export ...` lines for the running stack",
                       description='Usage: eval "$(slicert env)". Prints AIRFLOW_API_URL, '
                       "AIRFLOW_PASSWORD_FILE (JSON {user: password}), AIRFLOW_HOME (so "
                       "`airflow dags trigger` works) and the services' variables.")
    e.set_defaults(func=cmd_env)

    s = sub.add_parser(
        "submit", help="trigger a manifest's DAG through the Airflow REST API",
        description="Validate MANIFEST (+ --conf) locally, log in to the Airflow API (password "
        "file, JWT), unpause and trigger DAG slicert__<experiment name> with the conf; with "
        "--wait, follow the run and print progress. Exit 0 success, 1 run failed, 2 bad input, "
        "3 Airflow unreachable.")
    s.add_argument("--manifest", required=True, type=Path)
    s.add_argument("--conf", help='JSON object, e.g. \'{"repeat": 2, "parameters": '
                                  '{"unroll": [1, 4]}}\'')
    s.add_argument("--wait", action="store_true", help="wait for the run and print progress")
    s.add_argument("--timeout", type=float, default=None, help="--wait limit, seconds")
    s.add_argument("--api-url", default=None,
                   help="default $AIRFLOW_API_URL, else the embedded stack's")
    s.add_argument("--password-file", default=None,
                   help="JSON {user: password}; default $AIRFLOW_PASSWORD_FILE, else the stack's")
    s.add_argument("--user", default=None, help="user in the password file (default: first)")
    s.set_defaults(func=cmd_submit)

    i = sub.add_parser("images", help="build the Docker images (images/build.sh)",
                       description="Build slicert-base (debootstrap + docker import), "
                       "slicert-python, -worker, -airflow, -mlflow, -postgres, -redis with the "
                       "legacy builder. Starts the private Docker engine (scripts/dockerd.sh) "
                       "when no engine answers.")
    i.add_argument("targets", nargs="*", help="base python worker airflow mlflow postgres "
                                              "redis all (default all)")
    i.add_argument("--no-cache", action="store_true")
    i.set_defaults(func=cmd_images)


# ------------------------------------------------------------------------------ up / down / env
def cmd_up(args: argparse.Namespace) -> int:
    from slicert_ops.orchestrate import stack

    r = stack.up(port=args.port, parallelism=args.parallelism, timeout=args.timeout,
                 with_services=not args.no_services, wait_dags=not args.no_wait_dags)
    t = r.timings
    print(f"Airflow is up at {r.api_url} in {r.seconds:.1f} s "
          f"(db migrate {t.get('db_migrate', 0):.1f} s, components healthy "
          f"{t.get('airflow_healthy', 0):.1f} s, DAGs parsed {t.get('dags_parsed', 0):.1f} s"
          + (f", services {t['services']:.1f} s" if "services" in t else "") + ")")
    print(f"  login: user {r.user!r}, password in {r.password_file} (JSON {{user: password}})")
    print(f"  DAGs: {', '.join(r.dags) if r.dags else '(none yet)'}")
    if r.services:
        print(f"  MLflow: {_mlflow_ui()}")
    for err in r.import_errors:
        print(f"  import error: {err.splitlines()[0] if err else ''}")
        for line in err.splitlines()[1:12]:
            print(f"    {line}")
    print('  shell: eval "$(slicert env)"; stop: slicert down')
    return 0


def _mlflow_ui() -> str:
    """The MLflow experiment list in its machine-learning view (the services' address)."""
    from slicert_ops.tracking.links import experiments_url, ui_url

    try:
        from slicert_ops.services import client_env

        env = dict(client_env())
    except Exception:  # noqa: BLE001 - the link is a convenience
        env = dict(os.environ)
    ui = ui_url({**env, **{k: v for k, v in os.environ.items()
                           if k == "SLICERT_MLFLOW_UI_URL"}})
    return experiments_url(ui) if ui else "(address unknown: `slicert services status`)"


def cmd_down(args: argparse.Namespace) -> int:
    from slicert_ops.orchestrate import stack

    stack.down(services=not args.keep_services)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from slicert_ops.orchestrate import stack

    for line in stack.env_lines():
        print(line)
    return 0


# ------------------------------------------------------------------------------ submit
def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    from slicert_ops.orchestrate import airflow_cfg, stack

    state = stack.read_state(airflow_cfg.StackPaths.from_env())
    url = args.api_url or os.environ.get("AIRFLOW_API_URL") or state.get("api_url")
    pw = args.password_file or os.environ.get("AIRFLOW_PASSWORD_FILE") \
        or state.get("password_file")
    if not url:
        raise InputError("no Airflow API address", field="--api-url",
                         fix="run `slicert up`, or give --api-url / export AIRFLOW_API_URL")
    if not pw:
        raise InputError("no password file", field="--password-file",
                         fix="run `slicert up`, or give --password-file / export "
                             "AIRFLOW_PASSWORD_FILE")
    return url, pw


def cmd_submit(args: argparse.Namespace) -> int:
    from slicert_ops.manifest import load_manifest, parse_conf
    from slicert_ops.orchestrate import dagspec
    from slicert_ops.orchestrate.client import AirflowClient, ApiError

    conf = parse_conf(args.conf) if args.conf else {}
    # the same validation as the DAG's first task: fail here, before anything is queued
    exp = load_manifest(args.manifest, (), dagspec.manifest_conf(conf) or None)
    dag_id = dagspec.dag_id(exp.name)
    url, pw = _endpoint(args)
    client = AirflowClient.from_password_file(url, pw, args.user)
    dag = _wait_for_dag(client, dag_id, args.manifest)
    if dag.get("is_paused"):
        client.unpause(dag_id)
        _err(f"unpaused {dag_id}")
    try:
        run = client.trigger(dag_id, conf)
    except ApiError as exc:
        if exc.status == 400:
            raise InputError(f"Airflow refused the conf: {exc.detail}", field="--conf") from None
        raise
    run_id = run["dag_run_id"]
    link = f"{url}/dags/{dag_id}/runs/{run_id}"
    _err(f"triggered {dag_id}: run {run_id}\n  {link}")
    state = run.get("state")
    result: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "state": state, "url": link}
    if args.wait:
        final = client.wait_run(dag_id, run_id, timeout=args.timeout, progress=_Progress())
        state = result["state"] = final.get("state")
        if state != "success":
            _explain_failure(client, dag_id, run_id)
        outcome = _outcome(client, dag_id, run_id)
        if outcome:
            result["outcome"] = outcome
    print(json.dumps(result))
    return 0 if (not args.wait or state == "success") else 1


def _outcome(client: Any, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """What the aggregate task reported (its XCom): counts, paths, MLflow, best candidates;
    printed as the task's log shows it."""
    from slicert_ops.orchestrate.client import ApiError
    from slicert_ops.report.outcome import outcome_lines

    try:
        outcome = client.xcom(dag_id, run_id, "aggregate")
    except (ApiError, ServiceError) as exc:
        _err(f"(the aggregate task's summary is unavailable: {exc})")
        return None
    if not isinstance(outcome, dict) or "runs" not in outcome:
        _err("(no sweep summary: the aggregate task did not run)")
        return None
    for line in outcome_lines(outcome):
        _err(line)
    return outcome


def _wait_for_dag(client: Any, dag_id: str, manifest: Path, timeout: float = 90.0) -> dict:
    from slicert_ops.orchestrate.client import ApiError

    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            return client.dag(dag_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            errors = [e for e in client.import_errors()
                      if manifest.name in str(e.get("stack_trace", ""))]
            hint = ("; import error: " + str(errors[0].get("stack_trace", ""))[:500]) \
                if errors else ""
            raise ServiceError(f"Airflow has no DAG {dag_id} after {timeout:.0f} s{hint} "
                               "(is the manifest in the stack's experiments/ folder?)")
        if not said:
            _err(f"waiting for Airflow to parse {dag_id} (new manifests show up within 30 s)")
            said = True
        time.sleep(2.0)


class _Progress:
    """Prints a line whenever the per-task picture changes."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.last = ""

    def __call__(self, run: dict, tis: list[dict]) -> None:
        groups: dict[str, dict[str, int]] = {}
        for ti in tis:
            st = ti.get("state") or "none"
            groups.setdefault(ti["task_id"], {}).setdefault(st, 0)
            groups[ti["task_id"]][st] += 1
        parts = []
        for task, states in groups.items():
            total = sum(states.values())
            done = states.get("success", 0)
            bits = [f"{done}/{total} ok"] if total > 1 else []
            for st in ("running", "queued", "scheduled", "failed", "upstream_failed",
                       "skipped", "up_for_retry"):
                if states.get(st):
                    bits.append(f"{states[st]} {st}" if total > 1 else st)
            if total == 1 and not bits:
                bits = [next(iter(states))]
            parts.append(f"{task} {' '.join(bits)}")
        line = f"{run.get('state')}: " + " | ".join(parts)
        if line != self.last:
            _err(f"[{time.monotonic() - self.t0:6.1f} s] {line}")
            self.last = line


def _explain_failure(client: Any, dag_id: str, run_id: str) -> None:
    for ti in client.task_instances(dag_id, run_id):
        if ti.get("state") != "failed":
            continue
        name = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
        _err(f"task {name} failed; end of its log:")
        try:
            log = client.task_log(dag_id, run_id, ti["task_id"], ti.get("try_number") or 1,
                                  ti.get("map_index", -1))
        except ServiceError as exc:
            log = f"(log unavailable: {exc})"
        for line in log.splitlines()[-15:]:
            _err(f"    {line}")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ images
def cmd_images(args: argparse.Namespace) -> int:
    from slicert_ops.orchestrate import settings

    root = settings.repo_root()
    cmd = [str(root / "images" / "build.sh"), *(["--no-cache"] if args.no_cache else []),
           *args.targets]
    return subprocess.run(cmd).returncode  # build.sh starts the private engine if needed
