"""DAG factory + nightly DAG + stage operator, without any Airflow server.

The DagBag is loaded in a subprocess with its own AIRFLOW_HOME (Airflow reads its
configuration at import time), the way the dag-processor loads dags/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slicert_ops.errors import InputError
from slicert_ops.manifest import load_manifest
from slicert_ops.manifest.schema import BOARDS
from slicert_ops.orchestrate import dagspec, settings

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

# "now" at stack start -> expected first nightly run (never a slot already past)
FIRST_RUN = {
    "2026-03-10T10:00:00+00:00": "2026-03-11T02:00:00+00:00",  # started in the day
    "2026-03-10T03:30:00+00:00": "2026-03-11T02:00:00+00:00",  # 1.5 h after a slot
    "2026-03-10T02:00:30+00:00": "2026-03-11T02:00:00+00:00",  # 30 s after a slot
    "2026-03-10T01:59:00+00:00": "2026-03-10T02:00:00+00:00",  # just before one
}
FIRST_RUN_NOWS = tuple(FIRST_RUN)

DUMP = textwrap.dedent("""
    import copy, json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(sys.argv[1])
    out = {"dags": {}, "import_errors": bag.import_errors}
    for dag_id, dag in bag.dags.items():
        tasks = {}
        for t in dag.tasks:
            tasks[t.task_id] = {
                "type": type(t).__name__,
                "downstream": sorted(t.downstream_task_ids),
                "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
                "mapped": type(t).__name__ == "MappedOperator",
                "argv": [str(a) for a in (getattr(t, "argv", None) or
                         (getattr(t, "partial_kwargs", {}) or {}).get("argv") or [])],
            }
        bad = {}
        for conf in ({"repeat": "x"}, {"parameters": {"unroll": "4"}}, {"repeat": 0}):
            try:
                params = copy.deepcopy(dag.params)
                for key, value in conf.items():
                    params[key] = value  # validates against the Param's schema
                params.validate()
                bad[json.dumps(conf)] = None
            except Exception as exc:
                bad[json.dumps(conf)] = str(exc)
        out["dags"][dag_id] = {
            "params": dict(dag.params.dump()),
            "schedule": str(dag.timetable),
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tags": sorted(dag.tags),
            "tasks": tasks,
            "bad_conf": bad,
        }
        # When would the scheduler first run it? Its own code on the serialized DAG (as the
        # dag-processor stores it), with "now" pinned: the first run of a fresh stack.
        import pendulum
        import airflow.timetables.trigger as trigger
        from airflow.serialization.serialized_objects import LazyDeserializedDAG
        first = {}
        if dag.timetable.can_be_scheduled:
            lazy = LazyDeserializedDAG.from_dag(dag)
            real_utcnow = trigger.utcnow
            for now in FIRST_RUN_NOWS:
                trigger.utcnow = lambda now=now: pendulum.parse(now)
                try:
                    info = lazy.next_dagrun_info(last_automated_run_info=None)
                finally:
                    trigger.utcnow = real_utcnow
                first[now] = info.run_after.isoformat() if info else None
        out["dags"][dag_id]["first_run"] = first
    print(json.dumps(out, default=str))
""").replace("FIRST_RUN_NOWS", repr(FIRST_RUN_NOWS))


def load_dagbag(tmp_path: Path, experiments: Path) -> dict:
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "SLICERT_EXPERIMENTS_DIR": str(experiments),
        "SLICERT_RESULTS_DIR": str(tmp_path / "results"),
        "SLICERT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    })
    r = subprocess.run([sys.executable, "-c", DUMP, str(ROOT / "dags")], env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def repo_bag(tmp_path_factory) -> dict:
    return load_dagbag(tmp_path_factory.mktemp("bag"), EXPERIMENTS)


def _manifests() -> list:
    return [load_manifest(p) for p in dagspec.manifest_sources(EXPERIMENTS)]


# ------------------------------------------------------------------------------ factory
def test_one_dag_per_manifest_plus_nightly(repo_bag):
    names = [m.name for m in _manifests()]
    assert names, "experiments/ has manifests"
    expected = {f"slicert__{n}" for n in names} | {dagspec.NIGHTLY_DAG_ID}
    assert set(repo_bag["dags"]) == expected
    assert repo_bag["import_errors"] == {}


def test_task_chain_plan_batches_aggregate_train(repo_bag):
    exp = next(m for m in _manifests() if m.name == "conv2d_5x5_latency")
    dag = repo_bag["dags"]["slicert__conv2d_5x5_latency"]
    t = dag["tasks"]
    assert set(t) == {"plan", "batch", "aggregate", "train"}  # no dead promote task
    assert t["plan"]["downstream"] == ["aggregate", "batch"]
    assert t["batch"]["mapped"] and t["batch"]["downstream"] == ["aggregate"]
    assert t["aggregate"]["trigger_rule"] == "all_done_min_one_success"
    assert t["aggregate"]["downstream"] == ["train"]
    assert t["train"]["downstream"] == []
    assert "--no-register" not in t["train"]["argv"]  # train decides promotion itself
    plan = t["plan"]["argv"]
    assert plan[:3] == ["stage", "plan", str(Path(exp.source).resolve())]
    assert "--out" in plan and "--conf" in plan
    assert plan[plan.index("--run-id") + 1] == "{{ run_id }}"  # a plan file per DAG run
    assert t["batch"]["argv"][:2] == ["stage", "batch"]
    assert dag["schedule"] and dag["catchup"] is False and dag["max_active_runs"] == 1


def test_params_mirror_the_manifest(repo_bag):
    for exp in _manifests():
        params = repo_bag["dags"][dagspec.dag_id(exp.name)]["params"]
        m = exp.to_dict()["experiment"]
        assert params["repeat"] == m["repeat"]
        assert params["parameters"] == m["parameters"]
        assert params["runner"] == m["runner"]
        assert params["logging"] == m["logging"]
        assert params["batch_size"] is None and params["jobs"] == 1
        assert params["track"] is True and params["train"] is True


def test_params_reject_wrong_types_naming_the_param(repo_bag):
    bad = repo_bag["dags"]["slicert__conv2d_5x5_latency"]["bad_conf"]
    assert "repeat" in bad['{"repeat": "x"}']
    assert "parameters" in bad['{"parameters": {"unroll": "4"}}']
    assert "repeat" in bad['{"repeat": 0}']


def test_nightly_dag_schedule_catchup_and_members(repo_bag):
    nightly = repo_bag["dags"][dagspec.NIGHTLY_DAG_ID]
    assert nightly["timetable"] == "CronTriggerTimetable"
    assert "0 2 * * *" in nightly["schedule"]
    assert nightly["catchup"] is False
    marked = [m.name for m in _manifests() if m.nightly]
    groups = {tid.split(".")[0] for tid in nightly["tasks"] if "." in tid}
    assert groups == {dagspec.group_id(n) for n in marked}
    assert "train" in nightly["tasks"] and "promote" not in nightly["tasks"]
    for name in marked:
        g = dagspec.group_id(name)
        assert nightly["tasks"][f"{g}.aggregate"]["downstream"] == ["train"]
        plan = nightly["tasks"][f"{g}.plan"]["argv"]
        assert plan[plan.index("--run-id") + 1] == "{{ run_id }}"
    assert nightly["tasks"]["train"]["downstream"] == []


def test_nightly_first_run_is_the_next_0200_never_a_missed_one(repo_bag):
    assert repo_bag["dags"][dagspec.NIGHTLY_DAG_ID]["first_run"] == FIRST_RUN
    for dag_id, dag in repo_bag["dags"].items():  # the per-manifest DAGs: triggered only
        if dag_id != dagspec.NIGHTLY_DAG_ID:
            assert dag["first_run"] == {}, dag_id


def test_broken_manifest_is_an_import_error_and_others_still_load(tmp_path):
    exp_dir = tmp_path / "experiments"
    exp_dir.mkdir()
    for p in dagspec.manifest_files(EXPERIMENTS):
        shutil.copy(p, exp_dir / p.name)
    shutil.copytree(EXPERIMENTS / "networks", exp_dir / "networks")
    (exp_dir / "broken.yaml").write_text(
        "experiment:\n  name: broken_one\n  repeat: 0\n  parameters:\n    tile_size: [8]\n")
    (exp_dir / "not_yaml.yaml").write_text("experiment: [unclosed\n")
    shutil.copy(EXPERIMENTS / "conv2d_5x5.yaml", exp_dir / "zz_duplicate.yaml")
    bag = load_dagbag(tmp_path, exp_dir)
    good = {f"slicert__{m.name}" for m in _manifests()}
    assert good | {dagspec.NIGHTLY_DAG_ID} == set(bag["dags"])
    assert "slicert__broken_one" not in bag["dags"]
    errors = bag["import_errors"]
    assert len(errors) == 1, errors
    (file, text), = errors.items()
    # not the factory file: Airflow would mark every DAG of that file stale (untriggerable)
    assert file.endswith("slicert_manifest_errors.py")
    assert "broken.yaml" in text and "experiment.repeat" in text
    assert "not_yaml.yaml" in text and "not valid YAML" in text
    assert "zz_duplicate.yaml" in text and "already used" in text


def test_no_manifests_still_gives_the_nightly_dag(tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    bag = load_dagbag(tmp_path, empty)
    assert set(bag["dags"]) == {dagspec.NIGHTLY_DAG_ID}
    assert set(bag["dags"][dagspec.NIGHTLY_DAG_ID]["tasks"]) == {"train"}


# ------------------------------------------------------------------------------ dagspec units
def test_conf_for_plan_strips_orchestration_params():
    conf = {"repeat": 2, "parameters": {"unroll": [1, 4]}, "batch_size": 3, "jobs": 2,
            "track": False, "train": False}
    assert json.loads(dagspec.manifest_conf_json(conf)) == {
        "repeat": 2, "parameters": {"unroll": [1, 4]}}
    assert dagspec.manifest_conf_json(None) == "{}"


def test_param_schemas_come_from_the_manifest_schema():
    exp = load_manifest(EXPERIMENTS / "conv2d_5x5.yaml")
    specs = dagspec.param_specs(exp.to_dict()["experiment"])
    assert specs["repeat"]["schema"] == {"type": "integer", "minimum": 1}
    unroll = specs["parameters"]["schema"]["properties"]["unroll"]
    assert unroll["type"] == "array" and unroll["items"]["type"] == "integer"
    runner = specs["runner"]["schema"]["properties"]
    assert runner["board"]["enum"] == list(BOARDS) and "mps2-an385" in BOARDS
    cpu = runner["cpu_mhz"]
    assert (cpu["type"], cpu["minimum"], cpu["maximum"]) == ("integer", 1, 1000)
    assert specs["runner"]["schema"]["properties"]["simulate_irq_load"]["type"] == "boolean"


def test_discover_reports_file_and_field(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "experiment:\n  name: a\n  parameters:\n    tile_size: [8]\n    unrol: [2]\n")
    good, broken = dagspec.discover(tmp_path)
    assert good == []
    assert len(broken) == 1 and "experiment.parameters.unrol" in broken[0].line()
    assert "did you mean 'unroll'" in broken[0].line()


def test_runner_resolution_order_and_errors():
    assert settings.resolve_runner(None, None, {}) == "local"
    assert settings.resolve_runner(None, None, {"SLICERT_RUNNER": "docker"}) == "docker"
    assert settings.resolve_runner(None, "kubernetes", {"SLICERT_RUNNER": "docker"}) \
        == "kubernetes"
    assert settings.resolve_runner("local", "docker", {"SLICERT_RUNNER": "docker"}) == "local"
    with pytest.raises(InputError, match="slicert_runner"):
        settings.resolve_runner(None, "podman", {})


def test_docker_settings_never_root_and_bind_same_paths(tmp_path):
    env = {"SLICERT_RESULTS_DIR": str(tmp_path / "r"), "SLICERT_DOCKER_CPUS": "0.5",
           "SLICERT_DOCKER_MEMORY": "1g", "DOCKER_HOST": "unix:///tmp/x.sock"}
    s = settings.DockerSettings.from_env(env)
    assert s.docker_url == "unix:///tmp/x.sock" and s.cpus == 0.5 and s.mem_limit == "1g"
    assert (str(tmp_path / "r"), str(tmp_path / "r"), False) in s.binds
    with pytest.raises(InputError, match="never run as root"):
        settings.DockerSettings.from_env({**env, "SLICERT_DOCKER_USER": "0:0"})


# ------------------------------------------------------------------------------ operator
@pytest.fixture(scope="module")
def stage_module(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    sys.path.insert(0, str(ROOT / "plugins"))
    try:
        import slicert_stage
    finally:
        sys.path.remove(str(ROOT / "plugins"))
    return slicert_stage


FAKE = """#!{python}
import json, sys
args = sys.argv[1:]
print("progress on stdout")
print("progress on stderr", file=sys.stderr)
if args[:2] == ["stage", "plan"]:
    print(json.dumps({{"experiment": "x", "plan": "/r/x/plan.json", "batches": [0, 1]}}))
    sys.exit(0)
if "--sleep" in args:
    import time
    time.sleep(60)
if "--fail" in args:
    code = int(args[args.index("--fail") + 1])
    print(f"slicert: error: m.yaml: experiment.parameters.bogus: unknown field", file=sys.stderr)
    sys.exit(code)
print(json.dumps({{"argv": args}}))
"""


class FakeTI:
    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


@pytest.fixture
def fake_slicert(tmp_path, monkeypatch):
    exe = tmp_path / "slicert"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("SLICERT_BIN", str(exe))
    monkeypatch.setenv("SLICERT_RUNNER", "local")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SLICERT_MLFLOW_UI_URL", raising=False)
    return exe


def test_render_flags(stage_module):
    f = stage_module.render_flags
    assert f({"--jobs": "2", "--track": "True", "--batch-size": "None", "--x": "False"}) \
        == ["--jobs", "2", "--track"]
    assert f({"--track": True, "--n": 3}) == ["--track", "--n", "3"]


def test_local_runner_argv_flags_batch_and_json_result(stage_module, fake_slicert):
    op = stage_module.SliceRTStageOperator(
        task_id="t", argv=["stage", "batch", "/r/x/plan.json"],
        flags={"--jobs": "2", "--track": "False"}, batch=3)
    result = op.execute({"ti": FakeTI()})
    assert result == {"argv": ["stage", "batch", "/r/x/plan.json", "--jobs", "2", "--batch", "3"]}


def test_xcom_return_splits_the_plan(stage_module, fake_slicert):
    ti = FakeTI()
    op = stage_module.SliceRTStageOperator(task_id="plan", argv=["stage", "plan", "m.yaml"],
                                           xcom_return="batches")
    assert op.execute({"ti": ti}) == [0, 1]
    assert ti.pushed == {"experiment": "x", "plan": "/r/x/plan.json"}


def test_exit_codes_map_to_retry_policy(stage_module, fake_slicert):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "batch", "--fail", "2"])
    with pytest.raises(AirflowFailException, match="experiment.parameters.bogus"):
        op.execute({"ti": FakeTI()})
    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "batch", "--fail", "1"])
    with pytest.raises(AirflowFailException, match="failures"):
        op.execute({"ti": FakeTI()})
    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "batch", "--fail", "3"])
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": FakeTI()})
    assert not isinstance(info.value, AirflowFailException)


def test_disabled_task_is_skipped(stage_module, fake_slicert):
    from airflow.sdk.exceptions import AirflowSkipException

    op = stage_module.SliceRTStageOperator(task_id="t", argv=["train"], enabled="False")
    with pytest.raises(AirflowSkipException):
        op.execute({"ti": FakeTI()})


def test_kubernetes_runner_fails_clearly_without_the_client(stage_module, fake_slicert):
    from airflow.sdk.exceptions import AirflowFailException

    try:
        import kubernetes  # noqa: F401
        pytest.skip("the kubernetes client is installed here")
    except ImportError:
        pass
    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "plan", "m.yaml"],
                                           runner="kubernetes")
    with pytest.raises(AirflowFailException, match="pip install kubernetes"):
        op.execute({"ti": FakeTI()})


def test_killed_task_kills_the_stage_and_is_retried(stage_module, fake_slicert):
    import threading
    import time

    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "batch", "--sleep"])
    box = {}

    def run():
        try:
            op.execute({"ti": FakeTI()})
        except Exception as exc:  # noqa: BLE001 - what the task would raise
            box["exc"] = exc

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while op._runner is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    op.on_kill()
    t.join(timeout=30)
    assert isinstance(box["exc"], AirflowException)
    assert not isinstance(box["exc"], AirflowFailException)  # killed: retried


def test_mlflow_link_from_the_sweep_record(stage_module, fake_slicert, tmp_path, monkeypatch,
                                           capsys):
    monkeypatch.setenv("SLICERT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("SLICERT_MLFLOW_UI_URL", "http://127.0.0.1:5000/")
    (tmp_path / "exp1").mkdir()
    (tmp_path / "exp1" / "sweep.json").write_text(
        json.dumps({"experiment_id": "7", "parent_run_id": "abc"}))
    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "aggregate", "p"],
                                           experiment="exp1")
    op.execute({"ti": FakeTI()})
    link = stage_module.MLflowRunLink().get_link(op, ti_key=None)
    # the machine-learning view (MLflow 3 opens a fresh browser in its GenAI view)
    assert link == ("http://127.0.0.1:5000/#/experiments/7/runs/abc"
                    "?workflowType=machine_learning")
    assert f"MLflow: {link}" in capsys.readouterr().out  # in the task log too (structlog)


def test_plan_file_per_run_two_runs_planned_together_do_not_interfere(tmp_path, capsys):
    """Two runs of one DAG with different conf: each plan task writes its own file, and each
    batch task reads back exactly the candidates its own run planned."""
    from slicert_ops.cli import main
    from slicert_ops.plan import plan_exp_dir, read_plan

    manifest = EXPERIMENTS / "conv2d_5x5.yaml"
    runs = {"manual__2026-03-10T10:00:00+00:00": {"repeat": 1, "parameters": {"unroll": [1]}},
            "manual__2026-03-10T10:00:01+00:00": {"repeat": 2,
                                                  "parameters": {"unroll": [2, 4]}}}
    plans = {}
    for run_id, conf in runs.items():
        assert main(["stage", "plan", str(manifest), "--out", str(tmp_path), "--conf",
                     json.dumps(conf), "--run-id", run_id]) == 0
        plans[run_id] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    paths = [Path(p["plan"]) for p in plans.values()]
    assert len(set(paths)) == 2 and all(p.is_file() for p in paths)
    exp_dir = tmp_path / "conv2d_5x5_latency"
    assert {p.parent for p in paths} == {exp_dir / "plans"}
    assert not (exp_dir / "plan.json").exists()
    for (run_id, conf), out in zip(runs.items(), plans.values(), strict=True):
        exp, cands, plan = read_plan(Path(out["plan"]))
        assert plan["run_id"] == run_id and plan["conf"] == conf
        assert exp.repeat == conf["repeat"]
        assert sorted({c.schedule["unroll"] for c in cands}) == conf["parameters"]["unroll"]
        assert plan_exp_dir(Path(out["plan"])) == exp_dir.resolve()  # where batches write


def test_mlflow_link_needs_no_call_to_mlflow(stage_module, fake_slicert, tmp_path, monkeypatch):
    """Without a recorded id there is no link: MLflow itself is never asked (the UI address
    below accepts no connection)."""
    monkeypatch.setenv("SLICERT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("SLICERT_MLFLOW_UI_URL", "http://127.0.0.1:9/")
    op = stage_module.SliceRTStageOperator(task_id="t", argv=["stage", "aggregate", "p"],
                                           experiment="never_tracked")
    op.execute({"ti": FakeTI()})
    assert stage_module.MLflowRunLink().get_link(op, ti_key=None) == ""
    assert stage_module.mlflow_url({"mlflow_experiment_id": "3"}, None) == (
        "http://127.0.0.1:9/#/experiments/3?workflowType=machine_learning")
