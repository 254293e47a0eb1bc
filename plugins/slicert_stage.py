"""SliceRT stage operator: one `slicert ...` command line, run by the configured runner.

Runners (chosen at run time: operator ``runner`` argument > Airflow Variable
``slicert_runner`` > env ``SLICERT_RUNNER`` > ``local``):

- ``local``      the embedded default: the command as a local subprocess (argument list,
                 never a shell string), its own process group, killed with the task.
- ``docker``     ``DockerOperator`` on the ``slicert-worker`` image: unprivileged user,
                 memory / hard CPU / pids limits, no new privileges, all capabilities dropped,
                 network ``none`` unless the stage reaches S3/MLflow (``--track``, ``train``,
                 ``model``: then ``SLICERT_DOCKER_NETWORK``, default ``host``; in
                 docker-compose the compose network), results / artifacts / experiments
                 bind-mounted at the same absolute paths as on the host (so the plan file
                 path in XCom is valid on both sides).
- ``kubernetes`` ``KubernetesPodOperator`` (provider apache-airflow-providers-cncf-kubernetes,
                 imported lazily; without it the task fails with the install hint).

Every knob is an environment variable, documented in ``slicert_ops.orchestrate.settings``.
Exit codes: 0 ok; 2 (bad input) and 1 (some candidates failed) fail the task without retry
(deterministic); anything else (killed, OOM, services down) fails it with retries.

The JSON object a stage prints last on stdout becomes the task's XCom (``multiple_outputs``
splits it into keys: the plan task's ``plan`` and ``batches``). The "MLflow" extra link points
at the sweep's MLflow run (``results/<experiment>/sweep.json``) or at the experiment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from slicert_ops.orchestrate import settings
from slicert_ops.tracking.links import experiment_url

FALSE_VALUES = ("", "none", "null", "false", "0", "no", "off")
SERVICE_STAGES = ("train", "model", "sync")  # top-level commands that talk to MLflow / S3


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in FALSE_VALUES


def render_flags(flags: dict[str, Any] | None) -> list[str]:
    """{"--jobs": "2", "--track": "True", "--batch-size": "None"} -> ["--jobs", "2", "--track"]

    Rendered Jinja values: true -> the bare flag, false/None/empty -> left out, else flag+value.
    """
    out: list[str] = []
    for flag, value in (flags or {}).items():
        if isinstance(value, bool) or str(value).strip().lower() in ("true", "false"):
            if _truthy(value):
                out.append(flag)
        elif str(value).strip().lower() not in FALSE_VALUES[:3]:
            out += [flag, str(value).strip()]
    return out


def last_json_object(lines: Sequence[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def needs_services(argv: Sequence[str]) -> bool:
    return bool(argv) and (argv[0] in SERVICE_STAGES or "--track" in argv)


class MLflowRunLink(BaseOperatorLink):
    """Task -> the MLflow page of the sweep's run (or of the experiment)."""

    name = "MLflow"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        return getattr(operator, "_slicert_mlflow_url", None) or ""


class SliceRTStageOperator(BaseOperator):
    """Run ``slicert ARGV... FLAGS... [--batch K]`` with the configured runner.

    :param argv: the command after ``slicert`` (templated; may hold XComArgs, e.g. the plan file)
    :param flags: {"--flag": "{{ template }}"}: rendered; true -> bare flag, false/None -> left out
    :param batch: appended as ``--batch K`` (expand over the plan's batch indices)
    :param enabled: rendered; false -> the task is skipped (e.g. ``{{ params.train }}``)
    :param experiment: the experiment name (MLflow link, results sub-folder checks)
    :param runner: force a runner (default: Variable ``slicert_runner`` / ``SLICERT_RUNNER``)
    :param network: force "needs S3/MLflow" (default: ``--track`` given, or train/model stages)
    :param xcom_return: return only this key of the stage's JSON result (mappable, e.g. the
        plan's ``batches``) and push every other key as its own XCom (e.g. ``plan``)
    """

    template_fields: Sequence[str] = ("argv", "flags", "enabled")
    template_fields_renderers = {"argv": "json", "flags": "json"}
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#dbe9f6"

    def __init__(self, *, argv: list[Any], flags: dict[str, Any] | None = None,
                 batch: int | None = None, enabled: Any = True, experiment: str | None = None,
                 runner: str | None = None, network: bool | None = None,
                 xcom_return: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_nested_operators", True)
        super().__init__(**kwargs)
        self.argv = argv
        self.flags = flags or {}
        self.batch = batch
        self.enabled = enabled
        self.experiment = experiment
        self.runner = runner
        self.network = network
        self.xcom_return = xcom_return
        self._proc: subprocess.Popen | None = None
        self._inner: BaseOperator | None = None
        self._slicert_mlflow_url: str | None = None

    # ------------------------------------------------------------------ execute
    def command(self) -> list[str]:
        argv = [str(a) for a in self.argv] + render_flags(self.flags)
        if self.batch is not None:
            argv += ["--batch", str(int(self.batch))]
        return argv

    def execute(self, context: Any) -> Any:
        if not _truthy(self.enabled):
            raise AirflowSkipException(f"{self.task_id} is disabled for this run "
                                       f"(enabled={self.enabled!r})")
        argv = self.command()
        runner = settings.resolve_runner(self.runner, self._runner_variable())
        networked = needs_services(argv) if self.network is None else bool(self.network)
        self.log.info("slicert %s  [runner %s, %s]", " ".join(argv), runner,
                      "services" if networked else "no network")
        t0 = time.monotonic()
        if runner == "local":
            rc, out, err = self._run_local(argv)
        elif runner == "docker":
            rc, out, err = self._run_docker(argv, networked, context)
        else:
            rc, out, err = self._run_kubernetes(argv, networked, context)
        self.log.info("slicert %s: exit %s after %.1f s", " ".join(argv[:2]), rc,
                      time.monotonic() - t0)
        result = last_json_object(out)
        self._slicert_mlflow_url = self._mlflow_url(result, argv)
        if self._slicert_mlflow_url:  # in the log too, where users land (not only Details)
            self.log.info("MLflow: %s", self._slicert_mlflow_url)
        if rc != 0:
            self._fail(rc, argv, err or out)
        if self.xcom_return:
            if not result or self.xcom_return not in result:
                raise AirflowFailException(
                    f"`slicert {' '.join(argv[:2])}` printed no JSON object with "
                    f"{self.xcom_return!r} as its last stdout line")
            ti = context["ti"]
            for key, value in result.items():
                if key != self.xcom_return:
                    ti.xcom_push(key=key, value=value)
            return result[self.xcom_return]
        return result

    def _runner_variable(self) -> str | None:
        try:
            from airflow.sdk import Variable

            return Variable.get(settings.RUNNER_VARIABLE, default=None)
        except Exception:  # noqa: BLE001 - no Variable backend (tests, dag.test): env decides
            return None

    def _fail(self, rc: int, argv: list[str], lines: Sequence[str]) -> None:
        tail = "\n".join(list(lines)[-15:])
        what = f"`slicert {' '.join(argv[:2])}`"
        if rc == 2:
            raise AirflowFailException(f"{what} rejected its input (exit 2):\n{tail}")
        if rc == 1:
            raise AirflowFailException(f"{what} finished with failures (exit 1):\n{tail}")
        raise AirflowException(f"{what} failed (exit {rc}; retried if retries are left):\n{tail}")

    # ------------------------------------------------------------------ local
    def _run_local(self, argv: list[str]) -> tuple[int, list[str], list[str]]:
        cmd = settings.slicert_command() + argv
        env = dict(os.environ)
        env.update(settings.ALWAYS_ENV)
        out: list[str] = []
        err: deque[str] = deque(maxlen=200)
        # a scratch working directory: stray relative writes never land in the repo
        scratch = tempfile.TemporaryDirectory(prefix="slicert-task-")
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, bufsize=1, env=env, cwd=scratch.name, start_new_session=True)

        def pump(stream: Any, sink: Any, prefix: str) -> None:
            for line in stream:
                line = line.rstrip("\n")
                sink.append(line)
                self.log.info("%s%s", prefix, line)

        threads = [threading.Thread(target=pump, args=(self._proc.stdout, out, ""), daemon=True),
                   threading.Thread(target=pump, args=(self._proc.stderr, err, ""), daemon=True)]
        for t in threads:
            t.start()
        rc = self._proc.wait()
        for t in threads:
            t.join(timeout=10)
        scratch.cleanup()
        return rc, out, list(err)

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.log.info("killing process group %s", proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._inner is not None:
            self._inner.on_kill()

    # ------------------------------------------------------------------ docker
    def _run_docker(self, argv: list[str], networked: bool,
                    context: Any) -> tuple[int, list[str], list[str]]:
        try:
            from airflow.providers.docker.exceptions import DockerContainerFailedException
            from docker.types import Mount
        except ImportError as exc:
            raise AirflowFailException(
                "runner 'docker' needs apache-airflow-providers-docker and the docker SDK "
                f"({exc}); they are in requirements.lock") from None
        s = settings.DockerSettings.from_env()
        mounts = []
        for host, target, read_only in s.binds:
            if not read_only:
                created = not Path(host).exists()
                Path(host).mkdir(parents=True, exist_ok=True)
                self._check_writable(Path(host), s.user, created)
            if Path(host).exists():
                mounts.append(Mount(target=target, source=host, type="bind", read_only=read_only))
        public, secret = settings.service_env() if networked else (dict(settings.ALWAYS_ENV), {})
        sink: dict[str, Any] = {}
        ti = context.get("ti") if hasattr(context, "get") else None
        labels = {"org.slicert.stage": " ".join(argv[:2]),
                  "org.slicert.task": f"{self.dag_id}.{self.task_id}"}
        if ti is not None:
            labels["org.slicert.run_id"] = str(getattr(ti, "run_id", ""))
        op = _LimitedDockerOperator(
            task_id=f"{self.task_id}.docker",
            image=s.image,
            command=["slicert", *argv],
            docker_url=s.docker_url,
            network_mode=s.service_network if networked else "none",
            mem_limit=s.mem_limit,
            cpus=s.cpus,
            user=s.user or settings.IMAGE_UID,
            mounts=mounts,
            environment=public,
            private_environment=secret,
            mount_tmp_dir=False,
            auto_remove="force",  # failed ones too: the task log has their output
            xcom_all=True,
            do_xcom_push=True,
            labels=labels,
            host_config_extra={
                "nano_cpus": int(s.cpus * 1e9),
                "memswap_limit": s.mem_limit,
                "pids_limit": s.pids_limit,
                "security_opt": ["no-new-privileges"],
                "cap_drop": ["ALL"],
            },
            sink=sink,
            allow_nested_operators=True,
        )
        self._inner = op
        try:
            lines = op.execute(context) or []
        except DockerContainerFailedException as exc:
            logs = [str(x).rstrip("\n") for x in (getattr(exc, "logs", None) or [])]
            return int(sink.get("status", 1) or 1), logs, logs
        finally:
            self._inner = None
        if isinstance(lines, str):
            lines = [lines]
        lines = [str(x).rstrip("\n") for x in lines]
        return int(sink.get("status", 0) or 0), lines, lines

    def _check_writable(self, path: Path, user: str | None, created: bool) -> None:
        """As root on the host, the container's uid must be able to write the results."""
        if os.getuid() != 0:
            return
        uid = int((user or settings.IMAGE_UID).split(":")[0])
        if created:
            os.chown(path, uid, uid)  # a folder we just made: hand it to the stage's user
            return
        targets = [path]
        if self.experiment and (path / self.experiment).exists():
            targets.append(path / self.experiment)
        for p in targets:
            st = p.stat()
            if (st.st_uid == uid and st.st_mode & 0o200) or st.st_mode & 0o002:
                continue
            raise AirflowFailException(
                f"{p} is not writable by uid {uid}, the unprivileged user of the stage "
                f"container: `chown -R {uid}:{uid} {p}` or set SLICERT_DOCKER_USER to its "
                "owner's uid:gid (never root)")

    # ------------------------------------------------------------------ kubernetes
    def _run_kubernetes(self, argv: list[str], networked: bool,
                        context: Any) -> tuple[int, list[str], list[str]]:
        try:
            from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
            from kubernetes.client import models as k8s
        except ImportError:
            raise AirflowFailException(
                "runner 'kubernetes' needs the Kubernetes provider, which is not installed: "
                "`pip install apache-airflow-providers-cncf-kubernetes` in the Airflow "
                "environment (and a cluster: see docs/orchestration.md), or set the runner to "
                "local / docker (Variable slicert_runner or SLICERT_RUNNER)") from None
        ks = settings.KubernetesSettings.from_env()
        if not ks.results_pvc:
            raise AirflowFailException(
                "runner 'kubernetes' needs SLICERT_K8S_RESULTS_PVC: a ReadWriteMany "
                "PersistentVolumeClaim mounted at the results path on every pod")
        results = str(settings.results_dir())
        artifacts = str(settings.artifacts_dir())
        public, _secret = settings.service_env() if networked else (dict(settings.ALWAYS_ENV),
                                                                      {})
        env_from = []
        if networked and os.environ.get("SLICERT_K8S_SECRET"):
            env_from.append(k8s.V1EnvFromSource(
                secret_ref=k8s.V1SecretEnvSource(name=os.environ["SLICERT_K8S_SECRET"])))
        op = KubernetesPodOperator(
            task_id=f"{self.task_id}.pod",
            name=f"slicert-{argv[0] if argv else 'stage'}",
            namespace=ks.namespace,
            image=ks.image,
            # The wrapper runs `slicert ARGV` and writes its JSON result for XCom.
            cmds=["python", "-m", "slicert_ops.orchestrate.xcom_wrapper"],
            arguments=argv,
            env_vars=public,
            env_from=env_from or None,
            container_resources=k8s.V1ResourceRequirements(
                limits={"memory": ks.memory, "cpu": ks.cpu},
                requests={"memory": ks.memory, "cpu": ks.cpu}),
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True, run_as_user=int(settings.IMAGE_UID),
                fs_group=int(settings.IMAGE_UID)),
            volumes=[k8s.V1Volume(name="results", persistent_volume_claim=(
                k8s.V1PersistentVolumeClaimVolumeSource(claim_name=ks.results_pvc)))],
            volume_mounts=[
                k8s.V1VolumeMount(name="results", mount_path=results, sub_path="results"),
                k8s.V1VolumeMount(name="results", mount_path=artifacts, sub_path="artifacts")],
            service_account_name=ks.service_account,
            labels={"app": "slicert-stage"},
            do_xcom_push=True,
            get_logs=True,
            on_finish_action="delete_succeeded_pod",
            allow_nested_operators=True,
        )
        self._inner = op
        try:
            result = op.execute(context)
        except Exception as exc:  # noqa: BLE001 - the pod's failure, reported with its text
            return 3, [], [str(exc)]
        finally:
            self._inner = None
        return 0, [json.dumps(result)] if isinstance(result, dict) else [], []

    # ------------------------------------------------------------------ MLflow link
    def _mlflow_url(self, result: dict[str, Any] | None, argv: list[str]) -> str | None:
        ui = settings.mlflow_ui_url()
        if not ui:
            return None
        result = result or {}
        if result.get("mlflow_url"):
            return str(result["mlflow_url"])
        exp_id, run_id = result.get("mlflow_experiment_id"), result.get("mlflow_run_id")
        name = self.experiment or result.get("experiment")
        if not (exp_id and run_id) and name:
            sweep = settings.results_dir() / name / "sweep.json"
            try:
                data = json.loads(sweep.read_text())
                exp_id = exp_id or data.get("experiment_id")
                run_id = run_id or data.get("parent_run_id")
            except (OSError, ValueError):
                pass
        if exp_id:
            return experiment_url(ui, exp_id, run_id)
        if name:
            try:
                q = urllib.parse.urlencode({"experiment_name": name})
                api = (os.environ.get("MLFLOW_TRACKING_URI") or ui).rstrip("/")
                with urllib.request.urlopen(
                        f"{api}/api/2.0/mlflow/experiments/get-by-name?{q}", timeout=3) as r:
                    exp_id = json.load(r)["experiment"]["experiment_id"]
                return experiment_url(ui, exp_id)
            except Exception:  # noqa: BLE001 - no link is better than a failed task
                return None
        return None


def _limited_docker_operator_class() -> type:
    from airflow.providers.docker.operators.docker import DockerOperator

    class _ClientProxy:
        """The docker APIClient, with hard limits added to every host config and the exit
        status recorded (DockerOperator only sets cpu *shares*)."""

        def __init__(self, client: Any, extra: dict[str, Any], sink: dict[str, Any]) -> None:
            self._client, self._extra, self._sink = client, extra, sink

        def create_host_config(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.update(self._extra)
            return self._client.create_host_config(*args, **kwargs)

        def wait(self, *args: Any, **kwargs: Any) -> Any:
            result = self._client.wait(*args, **kwargs)
            self._sink["status"] = result.get("StatusCode")
            return result

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    class LimitedDockerOperator(DockerOperator):
        def __init__(self, *, host_config_extra: dict[str, Any], sink: dict[str, Any],
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._host_config_extra = host_config_extra
            self._sink = sink

        @property
        def cli(self) -> Any:
            return _ClientProxy(self.hook.api_client, self._host_config_extra, self._sink)

    return LimitedDockerOperator


def _LimitedDockerOperator(**kwargs: Any) -> BaseOperator:  # noqa: N802 - a class factory
    return _limited_docker_operator_class()(**kwargs)


class SliceRTPlugin(AirflowPlugin):
    """Registers the MLflow extra link so the API server can show it."""

    name = "slicert"
    operator_extra_links = [MLflowRunLink()]
