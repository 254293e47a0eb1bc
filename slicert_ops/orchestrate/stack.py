"""The embedded stack: ``slicert up`` / ``slicert down`` / ``slicert env``.

``up`` starts, each in its own process group with a log file under <state>/logs:
the object store + MLflow (``slicert_ops.services``), then ``airflow db migrate`` and the
Airflow api-server (127.0.0.1:PORT), scheduler (LocalExecutor, --skip-serve-logs),
dag-processor and triggerer (--skip-serve-logs). It returns once every component reports
healthy on ``/api/v2/monitor/health`` and the DAGs of experiments/ are parsed.
``up`` is idempotent (running components are health-checked, dead ones restarted); ``down``
stops exactly the processes recorded in <state>/stack.json (SIGTERM to the group, SIGKILL
after a grace period; slicert_ops.procs) and the services ``up`` started. Data (DB, logs,
results) stay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicert_ops import procs
from slicert_ops.errors import InputError, ServiceError, SliceRTError
from slicert_ops.orchestrate import airflow_cfg, dagspec, settings
from slicert_ops.orchestrate.airflow_cfg import StackPaths
from slicert_ops.orchestrate.client import AirflowClient

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor",
               "triggerer": "triggerer"}
STOP_GRACE_S = 30.0

Say = Callable[[str], None]


def _say_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes
def _airflow_bin() -> list[str]:
    beside = Path(sys.executable).parent / "airflow"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "airflow"]


def _command(component: str, port: int) -> list[str]:
    base = _airflow_bin()
    if component == "api-server":
        return base + ["api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"]
    if component in ("scheduler", "triggerer"):
        return base + [component, "--skip-serve-logs"]
    return base + [component]


def _owns(entry: dict[str, Any]) -> Callable[[str], bool]:
    """Airflow rewrites its process title ("airflow api_server -- host:..."): match loosely
    (an empty cmdline is a process in the middle of exec: the start time already proves it)."""
    marker = entry.get("marker", "airflow")

    def owns(cmdline: str) -> bool:
        cmdline = cmdline.replace("_", "-")
        return not cmdline or ("airflow" in cmdline and marker in cmdline)

    return owns


def _why_dead(entry: dict[str, Any]) -> str | None:
    """None while the recorded process runs and is the one we started (pids get reused),
    else the reason it is not."""
    return procs.why_dead(entry, _owns(entry))


def _alive(entry: dict[str, Any]) -> bool:
    return _why_dead(entry) is None


def _lock(paths: StackPaths) -> AbstractContextManager[None]:
    return procs.locked(paths.state, busy=f"another `slicert up/down` is running on "
                                          f"{paths.state}")


def read_state(paths: StackPaths) -> dict[str, Any]:
    return procs.read_state(paths.stack_file)


def _spawn(component: str, cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    entry = procs.spawn(cmd, log=log, env=env, cwd=env.get("AIRFLOW_HOME"))
    entry["marker"] = component
    return entry


def _stop(entry: dict[str, Any], grace: float = STOP_GRACE_S) -> str:
    # whatever is left in the group (task subprocesses, gunicorn/uvicorn workers) goes too
    return procs.stop(entry, grace, _owns(entry))


# ------------------------------------------------------------------------------ services
def _services_module() -> Any | None:
    """slicert_ops.services (object store + MLflow) if this build has it."""
    try:
        import slicert_ops.services as services
    except ImportError:
        return None
    return services if all(hasattr(services, f) for f in ("up", "down", "client_env")) else None


def _services_up(say: Say) -> tuple[bool, dict[str, str]]:
    services = _services_module()
    if services is None:
        say("object store + MLflow: not started (slicert_ops.services is not available)")
        return False, {}
    t0 = time.monotonic()
    try:
        report = services.up()
        env = services.client_env()
    except SliceRTError as exc:
        raise ServiceError(f"object store + MLflow did not start: {exc} (or start without "
                           "them: `slicert up --no-services`; tasks then need track=false)") \
            from None
    actions = ", ".join(f"{k} {v.get('action')}" for k, v in report.items()
                        if isinstance(v, dict))
    say(f"object store + MLflow: healthy in {time.monotonic() - t0:.1f} s "
        f"(S3 {env.get('SLICERT_S3_ENDPOINT')}, MLflow {env.get('MLFLOW_TRACKING_URI')}; "
        f"{actions})")
    return True, env


# ------------------------------------------------------------------------------ up / down
@dataclass
class UpResult:
    api_url: str
    user: str
    password_file: str
    seconds: float
    timings: dict[str, float]
    dags: list[str]
    import_errors: list[str]
    services: bool


def _wait_healthy(client: AirflowClient, state: dict[str, Any], paths: StackPaths,
                  deadline: float, say: Say) -> dict[str, float]:
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    last = ""

    def dead() -> str | None:
        for comp, entry in state["components"].items():
            why = _why_dead(entry)
            if why:
                return (f"Airflow {comp} is not running ({why}) during start-up; last lines "
                        f"of {entry['log']}:\n{procs.tail(Path(entry['log']))}")
        return None

    def check() -> tuple[bool, str]:
        nonlocal last
        try:
            health = client.health()
        except ServiceError:
            return False, last or "no API"
        seen.setdefault("api-server", time.monotonic() - t0)
        states = {"metadatabase": (health.get("metadatabase") or {}).get("status")}
        for comp, key in HEALTH_KEYS.items():
            states[comp] = (health.get(key) or {}).get("status")
            if states[comp] == "healthy":
                seen.setdefault(comp, time.monotonic() - t0)
        bad = [k for k, v in states.items() if v != "healthy"]
        if not bad:
            return True, "healthy"
        now = ", ".join(f"{k} {v or 'starting'}" for k, v in states.items() if k in bad)
        if now != last:
            say(f"  waiting: {now}")
            last = now
        return False, now

    try:
        procs.wait_for(check, deadline=deadline, dead=dead, interval=0.5)
    except procs.ProcessExited as exc:
        raise ServiceError(exc.reason) from None
    except procs.WaitTimeout as exc:
        raise ServiceError(f"the Airflow stack is not healthy after start-up timeout "
                           f"({exc.detail}); logs: {paths.logs}") from None
    return seen


def _wait_dags(client: AirflowClient, expected: list[str], deadline: float,
               ) -> tuple[list[str], list[str]]:
    while True:
        dags = sorted(d["dag_id"] for d in client.dags(dagspec.DAG_PREFIX))
        errors = [f"{e.get('filename')}: {_exception_text(e.get('stack_trace', ''))}"
                  for e in client.import_errors()]
        if set(expected) <= set(dags) or time.monotonic() > deadline:
            return dags, errors
        time.sleep(1.0)


def _exception_text(stack_trace: str) -> str:
    """The exception message of a traceback (its last unindented line and what follows)."""
    lines = stack_trace.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] and not lines[i].startswith(" ") and lines[i] != "Traceback (most recent " \
                "call last):":
            start = i
            # a multi-line message: walk back to the line that names the exception
            while start > 0 and not lines[start].split(":")[0].rsplit(".", 1)[-1][:1].isupper():
                start -= 1
            text = "\n".join(lines[start:])
            head, sep, rest = text.partition(": ")
            return f"{head.rsplit('.', 1)[-1]}{sep}{rest}" if sep else text
    return stack_trace.strip()


def up(*, port: int | None = None, parallelism: int | None = None, timeout: float = 240.0,
       with_services: bool = True, wait_dags: bool = True, say: Say = _say_stderr) -> UpResult:
    t_start = time.monotonic()
    paths = StackPaths.from_env()
    with _lock(paths):
        state = read_state(paths)
        comps = state.get("components", {})
        running = {c: e for c, e in comps.items() if _alive(e)}
        if port is None:
            port = int(state.get("port") or os.environ.get("SLICERT_AIRFLOW_PORT")
                       or airflow_cfg.DEFAULT_PORT)
        if not running and not procs.port_free(port):
            raise InputError(f"port 127.0.0.1:{port} is taken by another program",
                             field="--port", fix="free it or run `slicert up --port N` "
                                                 "(or set SLICERT_AIRFLOW_PORT)")
        if running and int(state.get("port", port)) != port:
            raise InputError(f"the stack already runs on port {state.get('port')}",
                             field="--port", fix="`slicert down` first to change the port")
        if parallelism is None:
            parallelism = int(os.environ.get("SLICERT_AIRFLOW_PARALLELISM")
                              or max(2, os.cpu_count() or 2))
        timings: dict[str, float] = {}
        # 1. services (object store + MLflow): their env reaches every task
        services_started, services_env = False, {}
        if with_services:
            t0 = time.monotonic()
            services_started, services_env = _services_up(say)
            timings["services"] = round(time.monotonic() - t0, 2)
        # 2. configuration (secrets and the password file survive restarts)
        secrets_ = airflow_cfg.load_or_create_secrets(paths)
        passwords = airflow_cfg.load_or_create_passwords(paths)
        user = next(iter(passwords))
        paths.home.mkdir(parents=True, exist_ok=True)
        airflow_cfg.write_private(paths.cfg_file, airflow_cfg.render_cfg(
            paths, port, secrets_, parallelism=parallelism, user=user))
        env = airflow_cfg.process_env(paths, services_env)
        # 3. database
        if len(running) < len(COMPONENTS):
            t0 = time.monotonic()
            say(f"airflow db migrate ({paths.db_file})")
            log = paths.log_file("db-migrate")
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as fh:
                r = subprocess.run(_airflow_bin() + ["db", "migrate"], env=env, stdout=fh,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=str(paths.home))
            if r.returncode != 0:
                raise ServiceError(f"`airflow db migrate` failed (exit {r.returncode}); "
                                   f"last lines of {log}:\n{procs.tail(log)}")
            timings["db_migrate"] = round(time.monotonic() - t0, 2)
        # 4. components
        t_comp = time.monotonic()
        new_state = {"port": port, "api_url": f"http://127.0.0.1:{port}",
                     "airflow_home": str(paths.home), "password_file": str(paths.passwords_file),
                     "user": user, "services": bool(state.get("services")) or services_started,
                     "services_env": services_env or state.get("services_env", {}),
                     "components": dict(running)}
        for comp in COMPONENTS:
            if comp in running:
                continue
            new_state["components"][comp] = _spawn(comp, _command(comp, port), env,
                                                    paths.log_file(comp))
            say(f"started airflow {comp} (pid {new_state['components'][comp]['pid']}, "
                f"log {paths.log_file(comp)})")
        procs.write_state(paths.stack_file, new_state)
        # 5. health
        client = AirflowClient.from_password_file(new_state["api_url"], paths.passwords_file)
        deadline = time.monotonic() + timeout
        try:
            seen = _wait_healthy(client, new_state, paths, deadline, say)
        except ServiceError:
            say("start-up failed: stopping what was started (`slicert up` again to retry)")
            for comp, entry in new_state["components"].items():
                if comp not in running:
                    _stop(entry, grace=10)
            raise
        timings.update({f"{k}_healthy": round(v, 2) for k, v in seen.items()})
        timings["airflow_healthy"] = round(time.monotonic() - t_comp, 2)
        # 6. DAGs of experiments/
        dags: list[str] = []
        errors: list[str] = []
        if wait_dags:
            t0 = time.monotonic()
            specs, _broken = dagspec.discover()
            expected = [s.dag_id for s in specs] + [dagspec.NIGHTLY_DAG_ID]
            dags, errors = _wait_dags(client, expected, deadline)
            timings["dags_parsed"] = round(time.monotonic() - t0, 2)
        return UpResult(api_url=new_state["api_url"], user=user,
                        password_file=str(paths.passwords_file),
                        seconds=round(time.monotonic() - t_start, 2), timings=timings,
                        dags=dags, import_errors=errors, services=new_state["services"])


def down(*, services: bool = True, say: Say = _say_stderr) -> dict[str, str]:
    paths = StackPaths.from_env()
    with _lock(paths):
        state = read_state(paths)
        report: dict[str, str] = {}
        # scheduler first (it owns the running tasks), api-server last
        for comp in ("scheduler", "triggerer", "dag-processor", "api-server"):
            entry = state.get("components", {}).get(comp)
            report[comp] = _stop(entry) if entry else "not running"
            say(f"airflow {comp}: {report[comp]}")
        if services and state.get("services"):
            mod = _services_module()
            if mod is not None:
                for name, how in mod.down().items():
                    report[name] = how
                    say(f"{name}: {how}")
        state["components"] = {}
        state["services"] = False
        state.pop("services_env", None)
        if paths.stack_file.exists():
            procs.write_state(paths.stack_file, state)
        return report


def status() -> dict[str, Any]:
    paths = StackPaths.from_env()
    state = read_state(paths)
    comps = {c: ("running" if _alive(e) else "stopped")
             for c, e in state.get("components", {}).items()}
    return {"api_url": state.get("api_url"), "components": comps,
            "password_file": state.get("password_file"), "state_dir": str(paths.state)}


def env_lines() -> list[str]:
    """`export` lines for the stack (Airflow) and the services."""
    import shlex

    paths = StackPaths.from_env()
    state = read_state(paths)
    if not state.get("api_url"):
        raise ServiceError(f"no stack in {paths.state}: run `slicert up` first")
    lines = [
        f"export AIRFLOW_API_URL={shlex.quote(state['api_url'])}",
        f"export AIRFLOW_PASSWORD_FILE={shlex.quote(str(paths.passwords_file))}",
        f"export AIRFLOW_HOME={shlex.quote(str(paths.home))}",
        f"export AIRFLOW_CONFIG={shlex.quote(str(paths.cfg_file))}",
    ]
    if state.get("services"):
        # recorded at `up` (the services' ports/credentials of that start), mode-600 file
        lines += [f"export {k}={shlex.quote(str(v))}"
                  for k, v in (state.get("services_env") or {}).items()]
    return lines


def settings_summary() -> dict[str, str]:
    return {"results": str(settings.results_dir()), "experiments": str(settings.experiments_dir())}
