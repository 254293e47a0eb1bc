"""Airflow's cost on a sweep of >= 100 candidates, as ratios measured in one run.

Prints, for the same manifest (default bench/airflow_sweep.yaml: 132 cheap dense candidates,
repeat 1, untracked):
  1. direct `slicert run M --out DIR --jobs J`                         (the reference)
  2. the DAG `slicert__<name>` with the local runner: wall time from the REST trigger to the
     run's `success`, same effective parallelism (batch tasks in parallel on J Airflow slots,
     `jobs` per task 1 by default)                                    target <= 1.25x of 1
  3. the same DAG with the docker runner (Airflow Variable `slicert_runner=docker`, set and
     removed through the REST API: no restart)                        target <= 1.15x of 2
Every measurement starts from an empty results folder (no run is reused); a short warm-up
`slicert run` fills the runtime-object cache first so that nobody pays it alone.

Usage:
  .venv/bin/python bench/bench_airflow.py --start [--docker]
      brings up an isolated embedded stack (temp SLICERT_HOME, free ports, --no-services,
      the manifest as its only experiment), measures, then `slicert down`; --docker also
      starts the private engine (scripts/dockerd.sh) and needs the image slicert-worker:latest
      (images/build.sh worker).
  eval "$(slicert env)"; .venv/bin/python bench/bench_airflow.py [--docker]
      against a stack that is already up: the manifest must be in its experiments folder
      (so that the DAG exists) and --results must be the stack's SLICERT_RESULTS_DIR.
Options: --manifest M, --jobs J (2), --batch-size N (default ceil(n / J): one batch task
  per slot: with ~0.1-0.2 s per cheap run, every extra task costs ~1 s of Airflow
  start-up + scheduling),
  --task-jobs K (jobs inside one batch task, 1), --skip-direct, --skip-local.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.manifest import expand, load_manifest  # noqa: E402
from slicert_ops.orchestrate.client import AirflowClient, ApiError  # noqa: E402

SLICERT = [sys.executable, "-m", "slicert_ops.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict[str, str], *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([*SLICERT, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


def count_runs(exp_dir: Path) -> int:
    return sum(1 for p in exp_dir.glob("run_*") if p.is_dir() and ".tmp-" not in p.name)


def start_stack(tmp: Path, manifest: Path, jobs: int, docker: bool) -> dict[str, str]:
    exp_dir, results, artifacts = tmp / "experiments", tmp / "results", tmp / "artifacts"
    for d in (exp_dir, results, artifacts):
        d.mkdir()
    for d in (results, artifacts):
        os.chmod(d, 0o777)  # the docker runner's uid 1000 writes here too
    shutil.copy(manifest, exp_dir / manifest.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.pop("SLICERT_BIN", None)
    env.update({
        "SLICERT_HOME": str(tmp / "home"), "SLICERT_EXPERIMENTS_DIR": str(exp_dir),
        "SLICERT_RESULTS_DIR": str(results), "SLICERT_ARTIFACTS_DIR": str(artifacts),
        "SLICERT_AIRFLOW_PORT": str(free_port()), "SLICERT_AIRFLOW_PARALLELISM": str(jobs),
        "SLICERT_RUNNER": "local", "PYTHONPATH": str(ROOT),
    })
    if docker:
        was_up = subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "status"],
                                capture_output=True).returncode == 0
        env["BENCH_STOP_ENGINE"] = "" if was_up else "1"
        r = subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "start"], capture_output=True,
                           text=True, timeout=180)
        if r.returncode != 0:
            sys.exit(f"scripts/dockerd.sh start failed:\n{r.stderr[-2000:]}")
        env["DOCKER_HOST"] = r.stdout.strip().splitlines()[-1].partition("=")[2]
    t0 = time.monotonic()
    r = cli(env, "up", "--no-services", timeout=900)
    if r.returncode != 0:
        sys.exit(f"slicert up failed:\n{(r.stdout + r.stderr)[-4000:]}")
    print(f"isolated stack up in {time.monotonic() - t0:.0f} s ({tmp})", file=sys.stderr)
    return env


def stack_client(env: dict[str, str]) -> AirflowClient:
    if "SLICERT_HOME" in env:
        st_file = Path(env["SLICERT_HOME"]) / "airflow" / "stack.json"
        if st_file.is_file():
            st = json.loads(st_file.read_text())
            return AirflowClient.from_password_file(st["api_url"], st["password_file"])
    url, pw = env.get("AIRFLOW_API_URL"), env.get("AIRFLOW_PASSWORD_FILE")
    if not (url and pw):
        sys.exit("no stack: pass --start, or eval \"$(slicert env)\" first")
    return AirflowClient.from_password_file(url, pw)


def run_dag(client: AirflowClient, dag_id: str, conf: dict, exp_dir: Path,
            expected: int) -> float:
    shutil.rmtree(exp_dir, ignore_errors=True)
    client.unpause(dag_id)
    t0 = time.monotonic()
    run = client.trigger(dag_id, conf)
    final = client.wait_run(dag_id, run["dag_run_id"], timeout=7200, poll=0.5)
    wall = time.monotonic() - t0
    tis = client.task_instances(dag_id, run["dag_run_id"])
    work = sum(float(ti.get("duration") or 0) for ti in tis)
    print(f"    {len(tis)} task instances, summed task time {work:.1f} s", file=sys.stderr)
    if final["state"] != "success":
        sys.exit(f"{dag_id} run {run['dag_run_id']} ended {final['state']}")
    n = count_runs(exp_dir)
    if n != expected:
        sys.exit(f"{dag_id}: {n} run folders in {exp_dir}, expected {expected}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=ROOT / "bench" / "airflow_sweep.yaml")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--task-jobs", type=int, default=1)
    ap.add_argument("--results", type=Path, default=None,
                    help="the stack's results folder (default: SLICERT_RESULTS_DIR)")
    ap.add_argument("--start", action="store_true", help="bring up an isolated stack")
    ap.add_argument("--docker", action="store_true", help="also measure the docker runner")
    ap.add_argument("--skip-direct", action="store_true")
    ap.add_argument("--skip-local", action="store_true")
    args = ap.parse_args()

    exp = load_manifest(args.manifest)
    n_cands = len(expand(exp).candidates)
    runs = n_cands * exp.repeat
    batch = args.batch_size or math.ceil(n_cands / args.jobs)
    dag_id = f"slicert__{exp.name}"
    conf = {"batch_size": batch, "jobs": args.task_jobs, "track": False, "train": False}
    print(f"{exp.name}: {n_cands} candidates x {exp.repeat} repeat = {runs} runs; direct "
          f"--jobs {args.jobs}; DAG: {math.ceil(n_cands / batch)} batches of <= {batch}, "
          f"{args.task_jobs} job(s) per task", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="bench-airflow-"))
    env = dict(os.environ)
    started = False
    try:
        if args.start:
            env = start_stack(tmp, args.manifest.resolve(), args.jobs, args.docker)
            started = True
        results = args.results or Path(env.get("SLICERT_RESULTS_DIR")
                                       or ROOT / "results")
        exp_dir = results / exp.name
        client = stack_client(env)
        client.dag(dag_id)  # the DAG must exist (manifest in the stack's experiments folder)

        # warm-up: the runtime-object cache (per runtime flags) for every slice value
        first = expand(exp).candidates[0].schedule
        warm = {k: [v] for k, v in first.items() if k in exp.parameters and k != "slice"}
        cli(env, "run", str(args.manifest), "--out", str(tmp / "warm"), "--jobs", str(args.jobs),
            "--conf", json.dumps({"parameters": warm}))

        figures: dict[str, float] = {}
        if not args.skip_direct:
            t0 = time.monotonic()
            r = cli(env, "run", str(args.manifest), "--out", str(tmp / "direct"),
                    "--jobs", str(args.jobs))
            figures["direct"] = time.monotonic() - t0
            if r.returncode != 0 or count_runs(tmp / "direct" / exp.name) != runs:
                sys.exit(f"direct run failed:\n{r.stderr[-3000:]}")
            print(f"direct `slicert run --jobs {args.jobs}`: {figures['direct']:.1f} s",
                  file=sys.stderr)
        if not args.skip_local:
            figures["local"] = run_dag(client, dag_id, conf, exp_dir, runs)
            print(f"Airflow, local runner: {figures['local']:.1f} s", file=sys.stderr)
        if args.docker:
            try:
                client._request("DELETE", "/api/v2/variables/slicert_runner")
            except ApiError:
                pass
            client._request("POST", "/api/v2/variables",
                            {"key": "slicert_runner", "value": "docker"})
            try:
                figures["docker"] = run_dag(client, dag_id, conf, exp_dir, runs)
            finally:
                client._request("DELETE", "/api/v2/variables/slicert_runner")
            print(f"Airflow, docker runner: {figures['docker']:.1f} s", file=sys.stderr)
    finally:
        if started:
            d = cli(env, "down", timeout=300)
            if d.returncode != 0:
                print(d.stderr[-2000:], file=sys.stderr)
            if env.get("BENCH_STOP_ENGINE"):  # leave an engine that was already up alone
                subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "stop"],
                               capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{exp.name}: {n_cands} candidates, {runs} runs, parallelism {args.jobs}, "
          f"batch size {batch}")
    for key, label in (("direct", f"direct slicert run --jobs {args.jobs}"),
                       ("local", "Airflow DAG, local runner"),
                       ("docker", "Airflow DAG, docker runner")):
        if key in figures:
            print(f"  {label:<34} {figures[key]:7.1f} s  ({runs / figures[key]:.2f} runs/s)")
    if "direct" in figures and "local" in figures:
        ratio = figures["local"] / figures["direct"]
        print(f"  Airflow local / direct   = {ratio:.2f}x  (target <= 1.25x) "
              f"{'OK' if ratio <= 1.25 else 'MISSED'}")
    if "local" in figures and "docker" in figures:
        ratio = figures["docker"] / figures["local"]
        print(f"  docker runner / local    = {ratio:.2f}x  (target <= 1.15x) "
              f"{'OK' if ratio <= 1.15 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
