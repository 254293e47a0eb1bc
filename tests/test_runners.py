"""Stage runners without Airflow: a real subprocess, a real slicert-worker container, and
the Kubernetes pod spec (slicert_ops.orchestrate.runners)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from slicert_ops.orchestrate import runners, settings
from slicert_ops.orchestrate.runners import (
    DockerRunner,
    K8sRunner,
    LocalRunner,
    RunnerError,
    StageResult,
)

ROOT = Path(__file__).resolve().parents[1]

FAKE = textwrap.dedent("""
    import json, os, sys, time
    args = sys.argv[1:]
    print("progress on stdout", flush=True)
    print("progress on stderr", file=sys.stderr, flush=True)
    if args[:1] == ["sleep"]:
        child = __import__("subprocess").Popen([sys.executable, "-c",
                                                "import time; time.sleep(120)"])
        print(json.dumps({"child": child.pid}), flush=True)
        time.sleep(120)
    if args[:1] == ["fail"]:
        print("slicert: error: m.yaml: experiment.repeat: must be >= 1", file=sys.stderr)
        sys.exit(int(args[1]))
    print(json.dumps({"first": True}))
    print(json.dumps({"argv": args, "cwd": os.getcwd(),
                      "telemetry": os.environ.get("MLFLOW_DISABLE_TELEMETRY")}))
    print("a trailing line that is not JSON")
""")


@pytest.fixture
def fake(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_slicert.py"
    script.write_text(FAKE)
    return [sys.executable, str(script)]


# ------------------------------------------------------------------------------ helpers
def test_needs_services_and_last_json_object():
    assert runners.needs_services(["train", "--input", "x"])
    assert runners.needs_services(["stage", "batch", "p", "--track"])
    assert not runners.needs_services(["stage", "plan", "m.yaml"])
    assert not runners.needs_services([])
    lines = ['{"a": 1}', "{not json}", "[1, 2]", '  {"b": 2}  ', "tail"]
    assert runners.last_json_object(lines) == {"b": 2}
    assert runners.last_json_object(["no", "json"]) is None


def test_stage_result_failure_text_prefers_stderr():
    r = StageResult(2, stdout_tail=["out"], stderr_tail=[f"e{i}" for i in range(30)])
    assert r.failure_text() == "\n".join(f"e{i}" for i in range(15, 30))
    assert StageResult(3, stdout_tail=["only stdout"]).failure_text() == "only stdout"
    assert not r.ok and StageResult(0).ok
    assert StageResult(0, result={"x": 1}).xcom_text == '{"x": 1}'


def test_make_runner_by_name():
    assert isinstance(runners.make_runner("local", experiment="e", labels={}), LocalRunner)
    assert isinstance(runners.make_runner("kubernetes", env={}), K8sRunner)
    assert set(runners.RUNNER_CLASSES) == set(settings.RUNNERS)
    with pytest.raises(RunnerError, match="podman"):
        runners.make_runner("podman")


# ------------------------------------------------------------------------------ local
def test_local_runner_runs_a_subprocess(fake: list[str]):
    seen: list[str] = []
    res = LocalRunner(command=fake, on_line=seen.append).run(["stage", "batch", "p"], False)
    assert res.exit_code == 0 and res.ok
    # the last JSON object of stdout, not the last line
    assert res.result["argv"] == ["stage", "batch", "p"]
    assert res.result["telemetry"] == "true"  # settings.ALWAYS_ENV
    cwd = Path(res.result["cwd"])
    assert cwd.name.startswith("slicert-task-") and not cwd.exists()  # scratch, removed
    assert "progress on stdout" in seen and "progress on stderr" in seen  # streamed
    assert res.stderr_tail == ["progress on stderr"]
    assert res.stdout_tail[-1] == "a trailing line that is not JSON"
    assert res.duration_s > 0


def test_local_runner_exit_code_and_stderr(fake: list[str]):
    res = LocalRunner(command=fake).run(["fail", "2"], False)
    assert res.exit_code == 2 and res.result is None
    assert "experiment.repeat" in res.failure_text()


def test_local_runner_kill_ends_the_process_group(fake: list[str]):
    runner = LocalRunner(command=fake)
    box: dict[str, StageResult] = {}
    t = threading.Thread(target=lambda: box.update(res=runner.run(["sleep"], False)))
    t.start()
    deadline = time.monotonic() + 30
    while runner._proc is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the child is started
    runner.kill()
    t.join(timeout=30)
    res = box["res"]
    assert res.exit_code < 0  # killed by a signal
    child = res.result["child"]
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{child}/stat").read_text().split()[2] \
            if Path(f"/proc/{child}/stat").exists() else "X"
        if state == "Z":  # dead, not yet reaped by init
            break
        time.sleep(0.1)
    else:
        assert not Path(f"/proc/{child}").exists(), "the stage's child survived the kill"


# ------------------------------------------------------------------------------ docker: spec
def _docker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"SLICERT_RESULTS_DIR": str(tmp_path / "results"),
           "SLICERT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
           "SLICERT_EXPERIMENTS_DIR": str(tmp_path / "experiments"),
           "SLICERT_DOCKER_MEMORY": "512m", "SLICERT_DOCKER_CPUS": "0.5",
           "SLICERT_DOCKER_PIDS": "256"}
    for name in ("DOCKER_HOST", "SLICERT_DOCKER_URL", "SLICERT_WORKER_IMAGE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(extra)
    return env


def test_docker_container_spec_limits_user_network(tmp_path: Path):
    env = _docker_env(tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:5000",
                      AWS_SECRET_ACCESS_KEY="s3cret", SLICERT_DOCKER_NETWORK="farm")
    runner = DockerRunner(env=env, labels={"org.slicert.task": "d.t"})
    spec = runner.container_spec(["stage", "batch", "p"], networked=False)
    assert spec["command"] == ["slicert", "stage", "batch", "p"]
    assert spec["network_mode"] == "none"
    assert spec["user"].split(":")[0] not in ("0", "root")
    assert spec["mem_limit"] == spec["memswap_limit"] == "512m"
    assert spec["nano_cpus"] == 500_000_000 and spec["pids_limit"] == 256
    assert spec["security_opt"] == ["no-new-privileges"] and spec["cap_drop"] == ["ALL"]
    assert "MLFLOW_TRACKING_URI" not in spec["environment"]  # no services, no credentials
    assert spec["labels"] == {"org.slicert.stage": "stage batch", "org.slicert.task": "d.t"}
    net = runner.container_spec(["train"], networked=True)
    assert net["network_mode"] == "farm"
    assert net["environment"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert net["environment"]["AWS_SECRET_ACCESS_KEY"] == "s3cret"
    # rw folders are created; the read-only experiments folder is mounted only if it exists
    binds = runner.prepare_binds()
    assert (str(tmp_path / "results"), str(tmp_path / "results"), False) in binds
    assert (tmp_path / "artifacts").is_dir()
    assert all(not ro for _, _, ro in binds)
    (tmp_path / "experiments").mkdir()
    assert (str(tmp_path / "experiments"),) * 2 + (True,) in runner.prepare_binds()


def test_docker_unreachable_engine_is_a_retryable_exit_code(tmp_path: Path):
    env = _docker_env(tmp_path, SLICERT_DOCKER_URL=f"unix://{tmp_path}/no-engine.sock")
    res = DockerRunner(env=env).run(["--help"], False)
    assert res.exit_code == runners.DOCKER_ENGINE_ERROR
    assert "docker" in res.failure_text()


# ------------------------------------------------------------------------------ docker: real
@pytest.fixture(scope="module")
def docker_host() -> str:
    """A reachable engine with the slicert-worker image (CI installs both)."""
    import docker

    url = settings.DockerSettings.from_env().docker_url
    try:
        docker.DockerClient(base_url=url).ping()
    except Exception:  # noqa: BLE001 - try the private engine of scripts/dockerd.sh
        script = ROOT / "scripts" / "dockerd.sh"
        if not (shutil.which("dockerd") and os.getuid() == 0):
            pytest.fail(f"no Docker engine at {url} (set DOCKER_HOST)")
        r = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        url = r.stdout.strip().splitlines()[-1].partition("=")[2]
    client = docker.DockerClient(base_url=url)
    image = os.environ.get("SLICERT_WORKER_IMAGE") or settings.DEFAULT_IMAGE
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {image} is missing: build it with `images/build.sh worker`")
    return url


PROBE = textwrap.dedent("""
    import json, os, pathlib, sys
    def read(*paths):
        for p in paths:
            try:
                return pathlib.Path(p).read_text().strip()
            except OSError:
                pass
    status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    out = pathlib.Path(sys.argv[1]) / "from_container.txt"
    out.write_text("hello")
    try:
        (pathlib.Path(sys.argv[2]) / "nope").write_text("x")
        ro = False
    except OSError:
        ro = True
    print("to stderr", file=sys.stderr)
    print(json.dumps({
        "uid": os.getuid(), "nets": sorted(os.listdir("/sys/class/net")),
        "mem": read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "pids": read("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
        "cpu": read("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
        "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip(),
        "experiments_read_only": ro}))
    sys.exit(int(sys.argv[3]))
""")


@pytest.mark.docker
def test_docker_runner_runs_the_worker_image_limited_and_unprivileged(docker_host, tmp_path):
    env = _docker_env(tmp_path, DOCKER_HOST=docker_host)
    env.pop("SLICERT_DOCKER_URL", None)
    (tmp_path / "experiments").mkdir()
    seen: list[str] = []
    runner = DockerRunner(env=env, command=("python", "-c", PROBE), on_line=seen.append)
    res = runner.run([str(tmp_path / "results"), str(tmp_path / "experiments"), "0"], False)
    assert res.exit_code == 0, res.failure_text()
    info = res.result
    assert info["uid"] != 0
    assert info["nets"] == ["lo"]  # network none
    assert info["mem"] in (str(512 * 2**20),)
    assert info["pids"] == "256"
    assert info["cpu"].split()[0] in ("50000",)  # 0.5 CPU of a 100000 us period
    assert info["no_new_privs"] == "1" and int(info["cap_eff"], 16) == 0
    assert info["experiments_read_only"]
    # the results folder is the host's, at the same absolute path
    assert (tmp_path / "results" / "from_container.txt").read_text() == "hello"
    assert "to stderr" in seen and res.stderr_tail == ["to stderr"]
    # the container is removed
    import docker

    left = docker.DockerClient(base_url=docker_host).containers.list(
        all=True, filters={"label": "org.slicert.stage"})
    assert [c for c in left if str(tmp_path) in " ".join(c.attrs["Args"])] == []
    # exit codes come through
    res = runner.run([str(tmp_path / "results"), str(tmp_path / "experiments"), "3"], False)
    assert res.exit_code == 3 and res.result is not None


@pytest.mark.docker
def test_docker_runner_runs_slicert_in_the_worker_image(docker_host, tmp_path):
    env = _docker_env(tmp_path, DOCKER_HOST=docker_host)
    env.pop("SLICERT_DOCKER_URL", None)
    runner = DockerRunner(env=env)
    res = runner.run(["--help"], False)
    assert res.exit_code == 0, res.failure_text()
    assert any("stage" in line for line in res.stdout_tail)
    res = runner.run(["stage", "plan", "/nonexistent.yaml", "--out",
                      str(tmp_path / "results")], False)
    assert res.exit_code == 2  # bad input: the operator fails the task without retry
    assert "no such manifest file" in res.failure_text()


# ------------------------------------------------------------------------------ kubernetes
def _k8s_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"SLICERT_RESULTS_DIR": str(tmp_path / "results"),
            "SLICERT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "SLICERT_K8S_RESULTS_PVC": "slicert-results", "SLICERT_K8S_NAMESPACE": "farm",
            "SLICERT_K8S_MEMORY": "2Gi", "SLICERT_K8S_CPU": "500m", **extra}


def test_k8s_pod_spec(tmp_path: Path):
    env = _k8s_env(tmp_path, SLICERT_K8S_SERVICE_ACCOUNT="slicert-sa",
                   SLICERT_K8S_SECRET="slicert-creds", MLFLOW_TRACKING_URI="http://mlflow:5000",
                   AWS_SECRET_ACCESS_KEY="never-in-the-spec")
    runner = K8sRunner(env=env, labels={"org.slicert.run_id": "manual__2026-03-10T10:00:00+00:00"})
    pod = runner.pod_spec(["stage", "batch", "/r/p.json", "--batch", "1"], networked=False)
    assert pod["kind"] == "Pod" and pod["metadata"]["namespace"] == "farm"
    assert pod["metadata"]["generateName"] == "slicert-stage-"
    assert pod["metadata"]["labels"] == {"app": "slicert-stage", "slicert.org/network": "none"}
    assert pod["metadata"]["annotations"]["org.slicert.run_id"].startswith("manual__")
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "slicert-sa"
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                       "fsGroup": 1000}
    assert spec["volumes"] == [{"name": "results",
                                "persistentVolumeClaim": {"claimName": "slicert-results"}}]
    (c,) = spec["containers"]
    assert c["command"] == ["slicert", "stage", "batch", "/r/p.json", "--batch", "1"]
    assert c["resources"]["limits"] == c["resources"]["requests"] == {"memory": "2Gi",
                                                                      "cpu": "500m"}
    assert {(m["mountPath"], m["subPath"]) for m in c["volumeMounts"]} == {
        (str(tmp_path / "results"), "results"), (str(tmp_path / "artifacts"), "artifacts")}
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "envFrom" not in c
    assert "MLFLOW_TRACKING_URI" not in {e["name"] for e in c["env"]}
    net = runner.pod_spec(["train"], networked=True)
    (c,) = net["spec"]["containers"]
    assert net["metadata"]["labels"]["slicert.org/network"] == "services"
    assert net["metadata"]["generateName"] == "slicert-train-"
    assert c["envFrom"] == [{"secretRef": {"name": "slicert-creds"}}]
    names = {e["name"]: e["value"] for e in c["env"]}
    assert names["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "AWS_SECRET_ACCESS_KEY" not in names  # credentials: from the cluster's Secret only
    json.dumps(pod)  # plain data


def test_k8s_needs_the_results_pvc(tmp_path: Path):
    env = _k8s_env(tmp_path)
    del env["SLICERT_K8S_RESULTS_PVC"]
    with pytest.raises(RunnerError, match="SLICERT_K8S_RESULTS_PVC"):
        K8sRunner(env=env).pod_spec(["stage", "plan", "m.yaml"], False)


def test_k8s_without_the_client_fails_naming_the_install(tmp_path: Path):
    try:
        import kubernetes  # noqa: F401
        pytest.skip("the kubernetes client is installed here")
    except ImportError:
        pass
    with pytest.raises(RunnerError, match="pip install kubernetes"):
        K8sRunner(env=_k8s_env(tmp_path)).run(["stage", "plan", "m.yaml"], False)
