"""End to end with real servers: `slicert up` (Airflow api-server, scheduler, dag-processor,
triggerer + S3 + MLflow on 127.0.0.1), login, REST trigger with conf, runs on disk, `slicert
down`; and the docker runner against a private dockerd with the locally built worker image.

Slow (the stack starts in ~20-60 s); select with `-m airflow` / `-m docker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.ports import free_port_block

from slicert_ops.orchestrate.client import AirflowClient, ApiError

ROOT = Path(__file__).resolve().parents[1]
SLICERT = [sys.executable, "-m", "slicert_ops.cli"]
SMALL = """\
# e2e: 2 micro-tiles x 1 unroll, one repeat (conf overrides it)
experiment:
  name: "{name}"
  repeat: 1
  parameters:
    tile_size: [16]
    micro_tile: [2, 4]
    unroll: [2]
    slice: [64]
  runner:
    simulate_irq_load: true
    irq_period_us: 250
    irq_jitter_us: 40
"""

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1800)]



def _docker_host() -> tuple[str | None, bool]:
    """(DOCKER_HOST of the private engine of scripts/dockerd.sh, started by us?)"""
    if shutil.which("dockerd") is None or os.getuid() != 0:
        return None, False
    script = str(ROOT / "scripts" / "dockerd.sh")
    was_up = subprocess.run([script, "status"], capture_output=True).returncode == 0
    r = subprocess.run([script, "start"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return None, False
    return r.stdout.strip().splitlines()[-1].partition("=")[2], not was_up


class Stack:
    def __init__(self, tmp: Path, docker_host: str | None) -> None:
        self.tmp = tmp
        self.exp_dir = tmp / "experiments"
        self.results = tmp / "results"
        self.exp_dir.mkdir()
        self.results.mkdir()
        (tmp / "artifacts").mkdir()
        for d in (self.results, tmp / "artifacts"):
            os.chmod(d, 0o777)  # the docker runner's uid 1000 writes here too
        for p in (ROOT / "experiments").glob("*.yaml"):
            shutil.copy(p, self.exp_dir / p.name)
        self.manifest = self.exp_dir / "e2e_small.yaml"
        self.manifest.write_text(SMALL.format(name="e2e_small"))
        (self.exp_dir / "e2e_docker.yaml").write_text(SMALL.format(name="e2e_docker"))
        self.ident_manifest = self.exp_dir / "e2e_ident.yaml"
        self.ident_manifest.write_text(SMALL.format(name="e2e_ident"))
        self.kill_manifest = self.exp_dir / "e2e_kill.yaml"
        self.kill_manifest.write_text(SMALL.format(name="e2e_kill"))
        (self.exp_dir / "e2e_lost.yaml").write_text(SMALL.format(name="e2e_lost"))
        (self.exp_dir / "e2e_conc.yaml").write_text(SMALL.format(name="e2e_conc"))
        (self.exp_dir / "broken.yaml").write_text(  # must not hide or block the others
            "experiment:\n  name: broken_one\n  repeat: 0\n  parameters:\n    tile_size: [8]\n")
        self.port = free_port_block()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update({
            "SLICERT_HOME": str(tmp / "home"),
            "SLICERT_EXPERIMENTS_DIR": str(self.exp_dir),
            "SLICERT_RESULTS_DIR": str(self.results),
            "SLICERT_ARTIFACTS_DIR": str(tmp / "artifacts"),
            "SLICERT_AIRFLOW_PORT": str(self.port),
            "SLICERT_S3_PORT": str(free_port_block(10)),
            "SLICERT_MLFLOW_PORT": str(free_port_block()),
            "SLICERT_RUNNER": "local",
            "PYTHONPATH": str(ROOT),
        })
        self.env.pop("SLICERT_BIN", None)
        if docker_host:
            self.env["DOCKER_HOST"] = docker_host
        self.docker_host = docker_host

    def cli(self, *args: str, timeout: float = 600, env: dict | None = None):
        return subprocess.run([*SLICERT, *args], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=str(ROOT))

    @property
    def state(self) -> dict:
        return json.loads((Path(self.env["SLICERT_HOME"]) / "airflow" / "stack.json").read_text())

    def client(self) -> AirflowClient:
        st = self.state
        return AirflowClient.from_password_file(st["api_url"], st["password_file"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    docker_host, started_engine = _docker_host()
    s = Stack(tmp_path_factory.mktemp("e2e"), docker_host)
    t0 = time.monotonic()
    r = s.cli("up", timeout=900)
    s.up_seconds = time.monotonic() - t0
    s.up_output = r.stdout + r.stderr
    print(f"\n`slicert up` took {s.up_seconds:.1f} s\n{s.up_output}")
    try:
        assert r.returncode == 0, s.up_output[-4000:]
        yield s
    finally:
        d = s.cli("down", timeout=300)
        print(d.stdout + d.stderr)
        if started_engine:  # leave an engine that was already running alone
            subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "stop"], timeout=120)


# ------------------------------------------------------------------------------ stack
def test_up_is_healthy_loopback_only_and_idempotent(stack):
    health = stack.client().health()
    for key in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[key]["status"] == "healthy", health
    # bound to 127.0.0.1 only: another address of this host refuses the connection
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            other = s.getsockname()[0]
        except OSError:
            other = None
    if other and not other.startswith("127."):
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((other, stack.port)) != 0
    t0 = time.monotonic()
    again = stack.cli("up", timeout=300)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - t0 < 60
    assert "started airflow" not in again.stderr


def test_unauthenticated_api_calls_are_refused(stack):
    api = stack.state["api_url"]
    for path in ("/api/v2/dags", "/api/v2/dags/slicert__e2e_small/dagRuns"):
        try:
            urllib.request.urlopen(api + path, timeout=10)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status in (401, 403), path
    bad = AirflowClient(api, "admin", "not-the-password")
    with pytest.raises(ApiError) as info:
        bad.dags()
    assert info.value.status in (401, 403)


def test_env_and_password_file(stack):
    r = stack.cli("env")
    assert r.returncode == 0, r.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in r.stdout.splitlines())
    assert exports["AIRFLOW_API_URL"] == f"http://127.0.0.1:{stack.port}"
    pw = Path(exports["AIRFLOW_PASSWORD_FILE"])
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    users = json.loads(pw.read_text())
    assert isinstance(users, dict) and all(isinstance(v, str) and v for v in users.values())
    assert exports["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")


def test_dags_parsed_for_every_manifest(stack):
    ids = {d["dag_id"] for d in stack.client().dags("slicert__")}
    assert {"slicert__e2e_small", "slicert__e2e_docker", "slicert__nightly_sweep",
            "slicert__conv2d_5x5_latency"} <= ids


def test_broken_manifest_is_an_import_error_that_blocks_no_other_dag(stack):
    client = stack.client()
    deadline = time.monotonic() + 120
    while True:
        errors = client.import_errors()
        mine = [e for e in errors if "broken.yaml" in str(e.get("stack_trace", ""))]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert len(mine) == 1, errors
    assert mine[0]["filename"].endswith("slicert_manifest_errors.py")
    assert "experiment.repeat" in mine[0]["stack_trace"]
    for dag_id in ("slicert__e2e_small", "slicert__e2e_docker", "slicert__nightly_sweep"):
        dag = client.dag(dag_id)
        assert not dag["has_import_errors"] and not dag["is_stale"], dag
    assert "slicert__broken_one" not in {d["dag_id"] for d in client.dags("slicert__")}


# ------------------------------------------------------------------------------ runs
def _runs(results: Path, name: str) -> list[Path]:
    return sorted(p for p in (results / name).glob("run_*") if p.is_dir())


def test_submit_with_conf_runs_to_success_and_runs_exist(stack):
    conf = {"repeat": 2, "parameters": {"unroll": [1, 4]}, "train": False}
    t0 = time.monotonic()
    r = stack.cli("submit", "--manifest", str(stack.manifest), "--conf", json.dumps(conf),
                  "--wait", "--timeout", "900", timeout=1000)
    wall = time.monotonic() - t0
    print(r.stderr[-3000:])
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["state"] == "success"
    # conf applied: 2 micro-tiles x 2 unrolls = 4 candidates, x 2 repeats = 8 runs
    runs = _runs(stack.results, "e2e_small")
    assert len(runs) == 8, runs
    for run in runs:
        assert (run / "cycles.txt").is_file() and (run / "qemu_trace.json").is_file()
    # the plan file of this run, and only this run (concurrent runs never share one)
    plans = list((stack.results / "e2e_small" / "plans").glob("*.json"))
    assert len(plans) == 1 and not (stack.results / "e2e_small" / "plan.json").exists()
    plan = json.loads(plans[0].read_text())
    assert plan["conf"] == {"repeat": 2, "parameters": {"unroll": [1, 4]}}
    assert plan["run_id"] == out["run_id"]
    # where the results went: counts, paths, MLflow (machine-learning view), best candidates
    o = out["outcome"]
    assert o["runs"] == {"total": 8, "valid": 8, "failed": 0, "invalid": 0}, o
    assert o["results"] == str((stack.results / "e2e_small").resolve())
    assert Path(o["index"]).is_file() and Path(o["report"]).is_file()
    assert o["mlflow_url"].endswith("?workflowType=machine_learning"), o
    assert len(o["best"]["by_kernel_cycles"]) == 3
    for needle in ("sweep e2e_small: 8 runs: 8 ok, 0 failed, 0 invalid", f"index:   {o['index']}",
                   f"report:  {o['report']}", f"MLflow experiment: {o['mlflow_experiment_url']}",
                   "best by kernel cycles:"):
        assert needle in r.stderr, needle
    # per-task overhead: wall time of the run against the stages' own durations
    client = stack.client()
    tis = client.task_instances("slicert__e2e_small", out["run_id"])
    work = sum(float(ti.get("duration") or 0) for ti in tis)
    print(f"submit --wait wall {wall:.1f} s; {len(tis)} task instances, summed task time "
          f"{work:.1f} s")
    states = {ti["task_id"]: ti["state"] for ti in tis}
    assert states["train"] == "skipped" and "promote" not in states
    # the MLflow extra link of the aggregate task points at the sweep's run
    links = client._request("GET", f"/api/v2/dags/slicert__e2e_small/dagRuns/{out['run_id']}"
                                   "/taskInstances/aggregate/links")
    links = links.get("extra_links", links)
    assert (links.get("MLflow") or "").endswith("?workflowType=machine_learning"), links
    assert "/#/experiments/" in links["MLflow"]
    # ... and the aggregate task's log says it all, where users land
    agg = next(ti for ti in tis if ti["task_id"] == "aggregate")
    log = client.task_log("slicert__e2e_small", out["run_id"], "aggregate",
                          agg.get("try_number") or 1)
    assert "sweep e2e_small: 8 runs: 8 ok" in log and f"MLflow: {links['MLflow']}" in log


def test_airflow_cli_trigger_with_conf(stack):
    env = dict(stack.env)
    for line in stack.cli("env").stdout.splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        env[k] = v.strip("'")
    airflow = str(Path(sys.executable).parent / "airflow")
    conf = json.dumps({"repeat": 1, "parameters": {"micro_tile": [2]}, "train": False,
                       "track": False})
    r = subprocess.run([airflow, "dags", "trigger", "slicert__e2e_small", "--conf", conf,
                        "--output", "json"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("[{"))
    run_id = json.loads(line)[0]["dag_run_id"]
    run = stack.client().wait_run("slicert__e2e_small", run_id, timeout=600)
    assert run["state"] == "success"


def test_bad_conf_fails_the_first_task_naming_the_field(stack):
    client = stack.client()
    run = client.trigger("slicert__e2e_small", {"parameters": {"unrol": [2]}, "train": False})
    final = client.wait_run("slicert__e2e_small", run["dag_run_id"], timeout=600)
    assert final["state"] == "failed"
    tis = {ti["task_id"]: ti for ti in client.task_instances("slicert__e2e_small",
                                                             run["dag_run_id"])}
    assert tis["plan"]["state"] == "failed"
    assert tis["plan"]["try_number"] == 1  # bad input is not retried
    log = client.task_log("slicert__e2e_small", run["dag_run_id"], "plan", 1)
    assert "experiment.parameters.unrol" in log and "unroll" in log
    # a wrongly typed value is refused by Airflow itself, naming the param
    with pytest.raises(ApiError) as info:
        client.trigger("slicert__e2e_small", {"repeat": "two"})
    assert info.value.status == 400 and "repeat" in info.value.detail


# ------------------------------------------------------------------------------ equivalence, faults
def _failed_logs(client: AirflowClient, dag_id: str, run_id: str) -> str:
    out = []
    for ti in client.task_instances(dag_id, run_id):
        if ti["state"] not in ("success", "skipped"):
            out.append(f"--- {ti['task_id']} [{ti.get('map_index')}] {ti['state']}")
            try:
                out.append(client.task_log(dag_id, run_id, ti["task_id"],
                                           max(1, int(ti.get("try_number") or 1)),
                                           ti.get("map_index", -1))[-3000:])
            except ApiError as exc:
                out.append(str(exc))
    return "\n".join(out)


def test_dag_results_are_byte_identical_to_a_direct_run(stack, tmp_path):
    """The DAG (plan -> mapped batches -> aggregate) measures exactly what `slicert run` does."""
    conf = {"repeat": 2, "parameters": {"unroll": [1, 2]}}
    dag_id = "slicert__e2e_ident"
    client = stack.client()
    # batch_size 1: one candidate per mapped task, several batches in parallel into one folder
    run = client.trigger(dag_id, {**conf, "batch_size": 1, "train": False, "track": False})
    final = client.wait_run(dag_id, run["dag_run_id"], timeout=900)
    assert final["state"] == "success", _failed_logs(client, dag_id, run["dag_run_id"])
    direct = stack.cli("run", str(stack.ident_manifest), "--out", str(tmp_path),
                       "--conf", json.dumps(conf), timeout=900)
    assert direct.returncode == 0, direct.stderr[-3000:]
    dag_runs = _runs(stack.results, "e2e_ident")
    direct_runs = _runs(tmp_path, "e2e_ident")
    assert [r.name for r in dag_runs] == [r.name for r in direct_runs]
    assert len(dag_runs) == 2 * 2 * 2  # 2 micro-tiles x 2 unrolls x 2 repeats
    for a, b in zip(dag_runs, direct_runs, strict=True):
        for name in ("cycles.txt", "qemu_trace.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{a.name}/{name}"
        ma, mb = (json.loads((r / "manifest.json").read_text()) for r in (a, b))
        assert (ma["candidate_id"], ma.get("repeat")) == (mb["candidate_id"], mb.get("repeat"))


def _stage_batch_processes(plan_dir: Path) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        for i in range(len(cmd) - 2):
            if cmd[i] == "stage" and cmd[i + 1] == "batch" and str(plan_dir) in cmd[i + 2]:
                found.append(proc)
                break
    return found


def test_killed_batch_task_is_retried_and_leaves_each_run_once(stack):
    import signal

    dag_id = "slicert__e2e_kill"
    exp_dir = stack.results / "e2e_kill"
    client = stack.client()
    # one batch of 4 candidates x 3 repeats, untracked: ~10-20 s of work in one task
    conf = {"repeat": 3, "parameters": {"micro_tile": [1, 2, 4, 8]}, "batch_size": 4,
            "train": False, "track": False}
    run = client.trigger(dag_id, conf)
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 300
    killed = None
    while killed is None:
        assert time.monotonic() < deadline, "the batch task never ran with a run published"
        tis = [ti for ti in client.task_instances(dag_id, run_id) if ti["task_id"] == "batch"]
        if tis and tis[0]["state"] == "running" and _runs(stack.results, "e2e_kill"):
            procs = _stage_batch_processes(exp_dir)
            if procs:  # mid-batch: some runs published, the rest still to come
                assert len(_runs(stack.results, "e2e_kill")) < 12
                procs[0].send_signal(signal.SIGKILL)
                killed = procs[0].pid
                break
        if tis and tis[0]["state"] in ("success", "failed", "up_for_retry"):
            pytest.fail(f"batch task reached {tis[0]['state']} before it could be killed")
        time.sleep(0.2)
    final = client.wait_run(dag_id, run_id, timeout=900)
    assert final["state"] == "success", _failed_logs(client, dag_id, run_id)
    batch = next(ti for ti in client.task_instances(dag_id, run_id) if ti["task_id"] == "batch")
    assert batch["state"] == "success" and int(batch["try_number"]) == 2, batch
    log1 = client.task_log(dag_id, run_id, "batch", 1, batch.get("map_index", 0))
    assert "exit -9" in log1 or "failed (exit" in log1, log1[-2000:]
    # every run folder exactly once, complete, nothing half-written left behind
    assert not list(exp_dir.glob("*.tmp-*")), list(exp_dir.glob("*.tmp-*"))
    runs = _runs(stack.results, "e2e_kill")
    assert [r.name for r in runs] == [f"run_{n:04d}" for n in range(1, 13)]
    seen = set()
    for r in runs:
        for name in ("manifest.json", "cycles.txt", "qemu_trace.json"):
            assert (r / name).is_file(), f"{r.name}/{name}"
        man = json.loads((r / "manifest.json").read_text())
        assert man["status"] == "ok", man
        key = (man["candidate_id"], man.get("repeat"))
        assert key not in seen, key
        seen.add(key)
    assert len(seen) == 12


def test_two_runs_with_different_conf_triggered_together_do_not_interfere(stack):
    """Two runs of one DAG, triggered back to back with different conf: each plans into its
    own file and measures exactly its own candidates; both succeed."""
    dag_id = "slicert__e2e_conc"
    client = stack.client()
    confs = [{"parameters": {"micro_tile": [2], "unroll": [1, 2]}, "train": False,
              "track": False},
             {"repeat": 2, "parameters": {"micro_tile": [4], "unroll": [4]}, "train": False,
              "track": False}]
    runs = [client.trigger(dag_id, conf)["dag_run_id"] for conf in confs]
    for run_id in runs:
        final = client.wait_run(dag_id, run_id, timeout=900)
        assert final["state"] == "success", _failed_logs(client, dag_id, run_id)
    exp_dir = stack.results / "e2e_conc"
    seen = set()
    plans = []
    for run_id, conf in zip(runs, confs, strict=True):
        plan_file = client.xcom(dag_id, run_id, "plan", key="plan")
        assert plan_file and Path(plan_file).parent == exp_dir / "plans", plan_file
        seen.add(plan_file)
        plan = json.loads(Path(plan_file).read_text())
        plans.append(plan)
        assert plan["run_id"] == run_id
        assert plan["conf"] == {k: v for k, v in conf.items() if k not in ("train", "track")}
        want = {(c["schedule"]["micro_tile"], c["schedule"]["unroll"])
                for c in plan["candidates"]}
        assert want == {(m, u) for m in conf["parameters"]["micro_tile"]
                        for u in conf["parameters"]["unroll"]}
        outcome = client.xcom(dag_id, run_id, "aggregate")
        assert outcome["runs"]["failed"] == 0
    assert len(seen) == 2
    # runs of one DAG queue up (max_active_runs=1): the folders now hold the second run's
    # candidates, the first run's are kept in .superseded/
    measured = {json.loads((r / "manifest.json").read_text())["candidate_id"]
                for r in _runs(stack.results, "e2e_conc")}
    assert {c["id"] for c in plans[1]["candidates"]} == measured


def test_lost_worker_is_detected_within_a_minute_and_the_task_retried(stack):
    """Worker loss: SIGKILL the executor worker running a batch task and everything under
    it (nobody is left to report the task). The scheduler must notice from the missing
    heartbeats (task_instance_heartbeat_timeout 45 s, checked every 5 s; the default is
    300 s) and retry the task, which then completes the batch with each run once."""
    import signal

    import psutil

    dag_id = "slicert__e2e_lost"
    exp_dir = stack.results / "e2e_lost"
    client = stack.client()
    conf = {"repeat": 3, "parameters": {"micro_tile": [1, 2, 4, 8]}, "batch_size": 4,
            "train": False, "track": False}
    run_id = client.trigger(dag_id, conf)["dag_run_id"]
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "the batch task never ran"
        tis = [ti for ti in client.task_instances(dag_id, run_id) if ti["task_id"] == "batch"]
        if tis and tis[0]["state"] in ("success", "failed", "up_for_retry"):
            pytest.fail(f"batch task reached {tis[0]['state']} before the worker was killed")
        procs = _stage_batch_processes(exp_dir)
        if tis and tis[0]["state"] == "running" and procs:
            break
        time.sleep(0.2)
    worker = next((p for p in procs[0].parents()
                   if "LocalExecutor" in " ".join(p.cmdline())), None)
    assert worker is not None, [p.cmdline() for p in procs[0].parents()]
    doomed = [worker, *worker.children(recursive=True), *procs]
    for p in doomed:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    detected = None
    while detected is None and time.monotonic() - killed_at < 180:
        ti = next(t for t in client.task_instances(dag_id, run_id) if t["task_id"] == "batch")
        if ti["state"] != "running" or int(ti["try_number"]) > 1:
            detected = time.monotonic() - killed_at
        time.sleep(1.0)
    print(f"lost worker detected after {detected} s")
    assert detected is not None and detected < 60, detected
    final = client.wait_run(dag_id, run_id, timeout=900)
    assert final["state"] == "success", _failed_logs(client, dag_id, run_id)
    batch = next(ti for ti in client.task_instances(dag_id, run_id) if ti["task_id"] == "batch")
    assert batch["state"] == "success" and int(batch["try_number"]) == 2, batch
    assert not list(exp_dir.glob("*.tmp-*"))
    assert [r.name for r in _runs(stack.results, "e2e_lost")] == \
        [f"run_{n:04d}" for n in range(1, 13)]


# ------------------------------------------------------------------------------ docker runner
@pytest.mark.docker
def test_docker_runner_runs_the_same_dag_in_worker_containers(stack):
    if not stack.docker_host:
        pytest.fail("no Docker engine could be started here (needs root + dockerd)")
    env = dict(stack.env)
    probe = subprocess.run(["docker", "image", "inspect", "slicert-worker:latest"], env=env,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        build = subprocess.run([str(ROOT / "images" / "build.sh"), "worker"], env=env,
                               capture_output=True, text=True, timeout=3600)
        assert build.returncode == 0, build.stderr[-3000:]
    client = stack.client()
    client._request("POST", "/api/v2/variables", {"key": "slicert_runner", "value": "docker"})
    try:
        run = client.trigger("slicert__e2e_docker", {"train": False})
        final = client.wait_run("slicert__e2e_docker", run["dag_run_id"], timeout=900)
        if final["state"] != "success":
            for ti in client.task_instances("slicert__e2e_docker", run["dag_run_id"]):
                if ti["state"] == "failed":
                    print(client.task_log("slicert__e2e_docker", run["dag_run_id"],
                                          ti["task_id"], ti["try_number"],
                                          ti.get("map_index", -1))[-3000:])
        assert final["state"] == "success"
    finally:
        client._request("DELETE", "/api/v2/variables/slicert_runner")
    runs = _runs(stack.results, "e2e_docker")
    assert len(runs) == 2
    # written by the container's unprivileged user, not root
    assert all(r.stat().st_uid == 1000 for r in runs)
    log = client.task_log("slicert__e2e_docker", run["dag_run_id"], "plan", 1)
    assert "runner docker" in log
