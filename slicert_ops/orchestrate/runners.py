"""Stage runners: run one ``slicert ARGV`` command line somewhere, without Airflow.

Every runner has the same interface, ``run(argv, networked) -> StageResult``, and ``kill()``
(called from another thread when the task is killed):

- ``LocalRunner``   a local subprocess (argument list, never a shell string) in its own
                    process group and a scratch working directory; ``kill()`` ends the group.
- ``DockerRunner``  a container of the ``slicert-worker`` image through the docker SDK:
                    unprivileged user (never root), memory (swap off) / hard CPU / pids
                    limits, ``no-new-privileges``, every capability dropped, network ``none``
                    unless ``networked`` (then ``SLICERT_DOCKER_NETWORK``), results /
                    artifacts (rw) and experiments (ro) bind-mounted at the same absolute
                    paths as on the host (the plan path in XCom is valid on both sides).
- ``K8sRunner``     a pod (``pod_spec()`` builds it as a plain dict: no dependency) run with
                    the ``kubernetes`` client when it is installed: namespace, the results PVC
                    at the results / artifacts paths, ``runAsNonRoot`` uid 1000, requests =
                    limits, credentials from a Secret for networked stages, a
                    ``slicert.org/network`` label for a NetworkPolicy; succeeded pods deleted.

A stage's result is the last JSON object it prints on stdout (``StageResult.result``).
Configuration problems that no retry can fix raise ``RunnerError``; an engine or cluster
that fails under a stage gives a non-zero exit code (125 for Docker, 3 for Kubernetes), so
the caller retries it like any other infrastructure failure. Knobs: ``settings``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slicert_ops.errors import SliceRTError
from slicert_ops.orchestrate import settings

SERVICE_STAGES = ("train", "model", "sync")  # top-level commands that talk to MLflow / S3
TAIL_LINES = 200
DOCKER_ENGINE_ERROR = 125  # as `docker run` reports a failure of the engine itself
K8S_ERROR = 3

LineSink = Callable[[str], None]


class RunnerError(SliceRTError):
    """The runner cannot start the stage as configured (a retry would fail the same way)."""


def needs_services(argv: Sequence[str]) -> bool:
    """Does this stage reach S3 / MLflow (and so need a network)?"""
    return bool(argv) and (argv[0] in SERVICE_STAGES or "--track" in argv)


def json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def last_json_object(lines: Iterable[str]) -> dict[str, Any] | None:
    found = None
    for line in lines:
        found = json_object(line) or found
    return found


@dataclass
class StageResult:
    """What a runner reports about one stage."""

    exit_code: int
    result: dict[str, Any] | None = None  # the last JSON object line of stdout (XCom)
    stdout_tail: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def xcom_text(self) -> str | None:
        return None if self.result is None else json.dumps(self.result)

    def failure_text(self, lines: int = 15) -> str:
        """The end of stderr (else stdout): what a failed task reports."""
        return "\n".join((self.stderr_tail or self.stdout_tail)[-lines:])


class _Collector:
    """Lines of a running stage: logged as they come, tails kept, the last JSON object."""

    def __init__(self, on_line: LineSink | None) -> None:
        self.on_line = on_line
        self.stdout: deque[str] = deque(maxlen=TAIL_LINES)
        self.stderr: deque[str] = deque(maxlen=TAIL_LINES)
        self.result: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def line(self, text: str, *, stderr: bool = False, log: bool = True) -> None:
        text = text.rstrip("\r\n")
        with self._lock:
            (self.stderr if stderr else self.stdout).append(text)
            if not stderr:
                self.result = json_object(text) or self.result
        if log and self.on_line is not None:
            self.on_line(text)

    def finish(self, exit_code: int, t0: float) -> StageResult:
        return StageResult(exit_code=exit_code, result=self.result,
                           stdout_tail=list(self.stdout), stderr_tail=list(self.stderr),
                           duration_s=time.monotonic() - t0)


class Runner(Protocol):
    name: str

    def run(self, argv: list[str], networked: bool) -> StageResult: ...

    def kill(self) -> None: ...


# ------------------------------------------------------------------------------ local
class LocalRunner:
    """``slicert ARGV`` as a local subprocess (``networked`` changes nothing: same host)."""

    name = "local"

    def __init__(self, *, command: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None, on_line: LineSink | None = None,
                 **_: Any) -> None:
        self.command = list(command) if command else settings.slicert_command()
        self.env = {**(os.environ if env is None else env), **settings.ALWAYS_ENV}
        self.on_line = on_line
        self._proc: subprocess.Popen | None = None

    def run(self, argv: list[str], networked: bool = False) -> StageResult:
        t0 = time.monotonic()
        sink = _Collector(self.on_line)
        # a scratch working directory: stray relative writes never land in the repo
        with tempfile.TemporaryDirectory(prefix="slicert-task-") as scratch:
            proc = self._proc = subprocess.Popen(
                [*self.command, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, text=True, bufsize=1, env=self.env, cwd=scratch,
                start_new_session=True)

            def pump(stream: Any, stderr: bool) -> None:
                for text in stream:
                    sink.line(text, stderr=stderr)

            threads = [threading.Thread(target=pump, args=(proc.stdout, False), daemon=True),
                       threading.Thread(target=pump, args=(proc.stderr, True), daemon=True)]
            for t in threads:
                t.start()
            rc = proc.wait()
            for t in threads:
                t.join(timeout=10)
        return sink.finish(rc, t0)

    def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ------------------------------------------------------------------------------ docker
class DockerRunner:
    """``slicert ARGV`` in a limited, unprivileged container (docker SDK)."""

    name = "docker"

    def __init__(self, *, docker: settings.DockerSettings | None = None,
                 command: Sequence[str] = ("slicert",), experiment: str | None = None,
                 labels: Mapping[str, str] | None = None, on_line: LineSink | None = None,
                 env: Mapping[str, str] | None = None, **_: Any) -> None:
        self.settings = docker or settings.DockerSettings.from_env(env)
        self.command = list(command)
        self.experiment = experiment
        self.labels = dict(labels or {})
        self.on_line = on_line
        self.env = env
        self._container: Any = None
        self._killed = False

    # --- the container, as data ------------------------------------------------------------
    def prepare_binds(self) -> list[tuple[str, str, bool]]:
        """The bind mounts; rw folders are created (and checked writable when we are root)."""
        binds = []
        for host, target, read_only in self.settings.binds:
            if not read_only:
                created = not Path(host).exists()
                Path(host).mkdir(parents=True, exist_ok=True)
                self._check_writable(Path(host), created)
            if Path(host).exists():
                binds.append((host, target, read_only))
        return binds

    def container_spec(self, argv: list[str], networked: bool,
                       binds: Sequence[tuple[str, str, bool]] = ()) -> dict[str, Any]:
        """Keyword arguments of ``containers.create`` (the secrets included: never log it)."""
        s = self.settings
        public, secret = (settings.service_env(self.env) if networked
                          else (dict(settings.ALWAYS_ENV), {}))
        return {
            "image": s.image,
            "command": [*self.command, *argv],
            "user": s.user or settings.IMAGE_UID,
            "network_mode": s.service_network if networked else "none",
            "environment": {**public, **secret},
            "labels": {"org.slicert.stage": " ".join(argv[:2]), **self.labels},
            "mem_limit": s.mem_limit,
            "memswap_limit": s.mem_limit,  # no swap on top of the memory limit
            "nano_cpus": int(s.cpus * 1e9),  # a hard quota, not CPU shares
            "pids_limit": s.pids_limit,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "mounts": [{"Target": target, "Source": host, "Type": "bind",
                        "ReadOnly": read_only} for host, target, read_only in binds],
        }

    def _check_writable(self, path: Path, created: bool) -> None:
        """As root on the host, the container's uid must be able to write the results."""
        if os.getuid() != 0:
            return
        uid = int((self.settings.user or settings.IMAGE_UID).split(":")[0])
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
            raise RunnerError(
                f"{p} is not writable by uid {uid}, the unprivileged user of the stage "
                f"container: `chown -R {uid}:{uid} {p}` or set SLICERT_DOCKER_USER to its "
                "owner's uid:gid (never root)")

    # --- running ---------------------------------------------------------------------------
    def run(self, argv: list[str], networked: bool = False) -> StageResult:
        try:
            import docker
            from docker.types import Mount
        except ImportError as exc:
            raise RunnerError(f"runner 'docker' needs the docker SDK ({exc}); it is in "
                              "requirements.lock") from None
        t0 = time.monotonic()
        sink = _Collector(self.on_line)
        spec = self.container_spec(argv, networked, self.prepare_binds())
        spec["mounts"] = [Mount(target=m["Target"], source=m["Source"], type="bind",
                                read_only=m["ReadOnly"]) for m in spec["mounts"]]
        self._killed = False
        client = None
        try:
            client = docker.DockerClient(base_url=self.settings.docker_url)
            container = self._container = client.containers.create(**spec)
            container.start()
            for text in _lines(container.logs(stream=True, follow=True)):
                sink.line(text, stderr=True)  # live, both streams: the task log
            rc = int(container.wait().get("StatusCode", 1))
            # stdout alone, for the JSON result (stderr stays in stderr_tail)
            sink.stderr.clear()
            for text in _lines([container.logs(stdout=False, stderr=True,
                                               tail=TAIL_LINES)]):
                sink.stderr.append(text)
            for text in _lines([container.logs(stdout=True, stderr=False)]):
                sink.line(text, log=False)
        except docker.errors.DockerException as exc:
            sink.line(f"docker: {exc}", stderr=True)
            rc = DOCKER_ENGINE_ERROR
        finally:
            self._remove()
            if client is not None:
                client.close()
        return sink.finish(rc, t0)

    def _remove(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.remove(force=True)  # failed ones too: the task log has their output
            except Exception:  # noqa: BLE001, S110 - already gone
                pass

    def kill(self) -> None:
        container = self._container
        if container is not None and not self._killed:
            self._killed = True
            try:
                container.stop(timeout=10)
            except Exception:  # noqa: BLE001, S110 - already stopped / removed
                pass


def _lines(chunks: Iterable[bytes | str]) -> Iterable[str]:
    """Byte chunks (any boundaries) -> text lines."""
    buf = ""
    for chunk in chunks:
        buf += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        *done, buf = buf.split("\n")
        yield from done
    if buf:
        yield buf


# ------------------------------------------------------------------------------ kubernetes
K8S_INSTALL_HINT = (
    "runner 'kubernetes' needs the Kubernetes Python client, which is not installed: "
    "`pip install kubernetes` (or apache-airflow-providers-cncf-kubernetes, which brings it) in "
    "the Airflow environment (and a cluster: see docs/orchestration.md), or set the runner to "
    "local / docker (Variable slicert_runner or SLICERT_RUNNER)")


class K8sRunner:
    """``slicert ARGV`` in a pod; its log is the stage's output."""

    name = "kubernetes"
    poll_s = 2.0

    def __init__(self, *, k8s: settings.KubernetesSettings | None = None,
                 command: Sequence[str] = ("slicert",), labels: Mapping[str, str] | None = None,
                 on_line: LineSink | None = None, env: Mapping[str, str] | None = None,
                 **_: Any) -> None:
        self.settings = k8s or settings.KubernetesSettings.from_env(env)
        self.command = list(command)
        self.labels = dict(labels or {})
        self.on_line = on_line
        self.env = os.environ if env is None else env
        self._api: Any = None
        self._pod: str | None = None

    def pod_spec(self, argv: list[str], networked: bool) -> dict[str, Any]:
        """The V1Pod as a plain dict (what ``kubectl create -f`` would take)."""
        ks = self.settings
        if not ks.results_pvc:
            raise RunnerError("runner 'kubernetes' needs SLICERT_K8S_RESULTS_PVC: a "
                              "ReadWriteMany PersistentVolumeClaim mounted at the results "
                              "path on every pod")
        public = (settings.service_env(self.env)[0] if networked
                  else dict(settings.ALWAYS_ENV))  # secrets: only from the cluster's Secret
        container: dict[str, Any] = {
            "name": "base",
            "image": ks.image,
            "command": [*self.command, *argv],
            "env": [{"name": k, "value": v} for k, v in sorted(public.items())],
            "resources": {"limits": {"memory": ks.memory, "cpu": ks.cpu},
                          "requests": {"memory": ks.memory, "cpu": ks.cpu}},
            "volumeMounts": [
                {"name": "results", "mountPath": str(settings.results_dir(self.env)),
                 "subPath": "results"},
                {"name": "results", "mountPath": str(settings.artifacts_dir(self.env)),
                 "subPath": "artifacts"}],
            "securityContext": {"allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
        }
        secret = self.env.get("SLICERT_K8S_SECRET")
        if networked and secret:
            container["envFrom"] = [{"secretRef": {"name": secret}}]
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": int(settings.IMAGE_UID),
                                "fsGroup": int(settings.IMAGE_UID)},
            "containers": [container],
            "volumes": [{"name": "results",
                         "persistentVolumeClaim": {"claimName": ks.results_pvc}}],
        }
        if ks.service_account:
            spec["serviceAccountName"] = ks.service_account
        stage = (argv[0] if argv else "stage").replace("_", "-").lower()
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"slicert-{stage}-",
                "namespace": ks.namespace,
                "labels": {"app": "slicert-stage",
                           "slicert.org/network": "services" if networked else "none"},
                # free text (run ids hold ':' and '+', which label values may not)
                "annotations": {"org.slicert.stage": " ".join(argv[:2]), **self.labels},
            },
            "spec": spec,
        }

    def run(self, argv: list[str], networked: bool = False) -> StageResult:
        try:
            from kubernetes import client, config
        except ImportError:
            raise RunnerError(K8S_INSTALL_HINT) from None
        t0 = time.monotonic()
        sink = _Collector(self.on_line)
        body = self.pod_spec(argv, networked)
        ns = self.settings.namespace
        rc = K8S_ERROR
        try:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api = self._api = client.CoreV1Api()
            pod = api.create_namespaced_pod(ns, body)
            name = self._pod = pod.metadata.name
            sink.line(f"pod {ns}/{name}", stderr=True)
            phase = self._wait_started(api, name, ns, sink)
            if phase is not None:
                stream = api.read_namespaced_pod_log(name, ns, container="base", follow=True,
                                                     _preload_content=False)
                for text in _lines(stream.stream()):
                    sink.line(text)  # the pod log mixes stdout and stderr
                rc = self._exit_code(api, name, ns)
            if rc == 0:
                api.delete_namespaced_pod(name, ns)  # failed ones stay for `kubectl logs`
        except Exception as exc:  # noqa: BLE001 - the cluster's failure, reported with its text
            sink.line(f"kubernetes: {exc}", stderr=True)
            rc = rc or K8S_ERROR
        finally:
            self._pod = None
        return sink.finish(rc, t0)

    def _wait_started(self, api: Any, name: str, ns: str, sink: _Collector) -> str | None:
        while True:
            pod = api.read_namespaced_pod(name, ns)
            phase = pod.status.phase
            if phase in ("Running", "Succeeded", "Failed"):
                return phase
            for cs in pod.status.container_statuses or []:
                waiting = cs.state.waiting if cs.state else None
                if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff",
                                                  "CreateContainerConfigError",
                                                  "InvalidImageName"):
                    sink.line(f"pod {name}: {waiting.reason}: {waiting.message}", stderr=True)
                    return None
            time.sleep(self.poll_s)

    def _exit_code(self, api: Any, name: str, ns: str) -> int:
        for _ in range(60):
            pod = api.read_namespaced_pod(name, ns)
            for cs in pod.status.container_statuses or []:
                if cs.state and cs.state.terminated:
                    return int(cs.state.terminated.exit_code)
            time.sleep(self.poll_s)
        return K8S_ERROR

    def kill(self) -> None:
        api, name = self._api, self._pod
        if api is not None and name is not None:
            try:
                api.delete_namespaced_pod(name, self.settings.namespace)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass


# ------------------------------------------------------------------------------ choice
RUNNER_CLASSES: dict[str, type] = {"local": LocalRunner, "docker": DockerRunner,
                                   "kubernetes": K8sRunner}


def make_runner(name: str, **options: Any) -> Runner:
    """The runner called ``name`` (settings.RUNNERS); options it does not use are ignored."""
    try:
        cls = RUNNER_CLASSES[name]
    except KeyError:
        raise RunnerError(f"runner {name!r} is not one of {', '.join(RUNNER_CLASSES)}") \
            from None
    return cls(**options)
