"""Scale-out of the compose farm: the same sweep with 1 and with 2 Celery workers.

Each worker has concurrency 1 and a hard 1-CPU quota (``WORKER_CONCURRENCY=1``,
``WORKER_CPUS=1``), so 2 workers can at most double the throughput. For each worker count
the farm is started from scratch in its own compose project (``slicert-bench``: fresh
volumes, so no run is reused from the previous measurement), the sweep is triggered through
the REST API and timed from the trigger to the run's ``success``; the farm is then removed
with its volumes. Prints one line per measurement and a JSON summary; the speed-up is
``wall(1 worker) / wall(2 workers)`` (target >= 1.8 on an otherwise idle 2-core machine).

Default sweep: experiments/conv2d_5x5.yaml (baked into the slicert-airflow image) with conf
``{"repeat": 10, "batch_size": 1, "track": false, "train": false}``: 18 batch tasks of 10
runs, enough to keep both workers busy while plan + aggregate stay short.

Needs: a Docker engine (``DOCKER_HOST``, or ``scripts/dockerd.sh start``), the images
(``images/build.sh``), docker-compose 1.29, and a machine that is otherwise idle: the
script reads the load average first and says when the figure cannot mean anything
(``--force`` measures anyway). It uses the fixed network name ``slicert-farm``: stop a
running farm first (``docker-compose down``).

Usage:
  .venv/bin/python bench/bench_farm.py [--workers 1 2] [--repeat 10] [--batch-size 1]
                                       [--manifest experiments/conv2d_5x5.yaml] [--keep]
"""

from __future__ import annotations

import argparse
import json
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

from slicert_ops.manifest import load_manifest  # noqa: E402
from slicert_ops.orchestrate.client import AirflowClient, ApiError  # noqa: E402

PROJECT = "slicert-bench"
COMPOSE = ROOT / "docker-compose.yaml"
IDLE_LOAD = 0.5  # load average per core above which the machine is not "otherwise idle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg: str) -> None:
    print(f"bench_farm: {msg}", file=sys.stderr, flush=True)


class Farm:
    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.workers = workers
        self.env_file = workdir / ".env"
        self.air_port, self.ml_port = free_port(), free_port()

    def compose(self, *args: str, timeout: float = 900,
                check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["docker-compose", "-p", PROJECT, "--env-file", str(self.env_file),
               "-f", str(COMPOSE), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and r.returncode != 0:
            raise SystemExit(f"bench_farm: {' '.join(args[:2])} failed:\n{r.stderr[-3000:]}")
        return r

    def write_env(self) -> None:
        r = subprocess.run([str(ROOT / "images" / "gen-env.sh"), "--force", str(self.env_file)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit(f"bench_farm: gen-env.sh failed: {r.stderr}")
        lines = []
        overrides = {"COMPOSE_PROJECT_NAME": PROJECT, "AIRFLOW_PORT": str(self.air_port),
                     "MLFLOW_PORT": str(self.ml_port), "WORKER_CONCURRENCY": "1",
                     "WORKER_CPUS": "1"}
        for line in self.env_file.read_text().splitlines():
            key = line.split("=", 1)[0]
            lines.append(f"{key}={overrides.pop(key)}" if key in overrides else line)
        lines += [f"{k}={v}" for k, v in overrides.items()]
        self.env_file.write_text("\n".join(lines) + "\n")

    def up(self) -> float:
        t0 = time.monotonic()
        self.compose("up", "-d", "--scale", f"airflow-worker={self.workers}", timeout=1800)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ps = self.compose("ps", check=False).stdout
            rows = [ln for ln in ps.splitlines() if ln.startswith(PROJECT)]
            workers = [ln for ln in rows if "airflow-worker" in ln]
            core = [ln for ln in rows if any(s in ln for s in (
                "apiserver", "scheduler", "dag-processor", "triggerer", "mlflow"))]
            if len(workers) == self.workers and all("(healthy)" in ln for ln in workers + core):
                return time.monotonic() - t0
            time.sleep(5)
        raise SystemExit("bench_farm: the farm did not become healthy in 10 min:\n"
                         + self.compose("ps", check=False).stdout)

    def client(self) -> AirflowClient:
        pw = self.workdir / ".slicert" / "compose-passwords.json"
        return AirflowClient.from_password_file(f"http://127.0.0.1:{self.air_port}", pw)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", timeout=600, check=False)


def measure(farm: Farm, dag_id: str, conf: dict) -> dict:
    client = farm.client()
    deadline = time.monotonic() + 300
    while True:  # the dag-processor parses experiments/ after start-up
        try:
            if client.dag(dag_id).get("is_paused"):
                client.unpause(dag_id)
            break
        except ApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(3)
    t0 = time.monotonic()
    run = client.trigger(dag_id, conf)
    final = client.wait_run(dag_id, run["dag_run_id"], timeout=7200, poll=1.0)
    wall = time.monotonic() - t0
    tis = client.task_instances(dag_id, run["dag_run_id"])
    hosts = sorted({ti.get("hostname") or "" for ti in tis if ti["task_id"] == "batch"})
    return {"workers": farm.workers, "state": final.get("state"), "wall_s": round(wall, 2),
            "batch_tasks": sum(1 for ti in tis if ti["task_id"] == "batch"),
            "task_time_s": round(sum(float(ti.get("duration") or 0) for ti in tis), 2),
            "worker_hosts": hosts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, default=ROOT / "experiments" / "conv2d_5x5.yaml",
                    help="a manifest of experiments/ (the image holds that folder)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="leave the last farm running")
    ap.add_argument("--force", action="store_true", help="measure on a busy machine too")
    args = ap.parse_args()

    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench_farm: {tool} is not installed (make setup)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise SystemExit("bench_farm: no Docker engine answers: export DOCKER_HOST or run "
                         "`scripts/dockerd.sh start`")
    for image in ("slicert-airflow", "slicert-mlflow", "slicert-postgres", "slicert-redis"):
        if subprocess.run(["docker", "image", "inspect", f"{image}:latest"],
                          capture_output=True).returncode != 0:
            raise SystemExit(f"bench_farm: image {image}:latest is missing: images/build.sh")
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    idle = load / cores <= IDLE_LOAD
    say(f"{cores} cores, load average {load:.2f} "
        f"({'idle enough' if idle else 'NOT idle: a speed-up measured now means little'})")
    if not idle and not args.force:
        print(json.dumps({"measured": False, "reason": f"load average {load:.2f} on "
                                                       f"{cores} cores", "cores": cores}))
        return 3

    exp = load_manifest(args.manifest)
    dag_id = f"slicert__{exp.name}"
    conf = {"repeat": args.repeat, "batch_size": args.batch_size, "track": False,
            "train": False}
    results = []
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
            farm = Farm(Path(tmp), n)
            farm.write_env()
            farm.down()  # leftovers of an interrupted bench
            try:
                up_s = farm.up()
                say(f"{n} worker(s): farm healthy in {up_s:.0f} s; sweep {dag_id} {conf}")
                r = measure(farm, dag_id, conf)
                r["load_before"] = round(load, 2)
                results.append(r)
                say(f"{n} worker(s): {r['state']} in {r['wall_s']:.1f} s "
                    f"({r['batch_tasks']} batch tasks on {len(r['worker_hosts'])} worker(s))")
            finally:
                if not (args.keep and n == args.workers[-1]):
                    farm.down()
    summary: dict = {"measured": True, "manifest": str(args.manifest), "conf": conf,
                     "cores": cores, "runs": results}
    by_n = {r["workers"]: r["wall_s"] for r in results if r["state"] == "success"}
    if 1 in by_n and 2 in by_n:
        summary["speedup_2_vs_1"] = round(by_n[1] / by_n[2], 3)
        say(f"speed-up, 2 workers vs 1: {summary['speedup_2_vs_1']:.2f}x (target >= 1.8)")
    print(json.dumps(summary))
    return 0 if all(r["state"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
