"""The embedded Airflow's configuration: 127.0.0.1 only, login required, fast fan-out.

Everything goes into ``<state>/home/airflow.cfg`` (mode 600: it holds the JWT secret), so a
shell with ``AIRFLOW_HOME`` exported (``eval "$(slicert env)"``) runs ``airflow dags trigger``
against the same database. Settings, and why (see docs/orchestration.md):

- simple auth manager, one user, password file generated (JSON {user: password}); the REST
  API needs ``POST /auth/token`` then ``Authorization: Bearer <JWT>``
- api-server on 127.0.0.1:PORT; the execution API at the same address; no log servers
  (scheduler / triggerer run with --skip-serve-logs; LocalExecutor logs are local files)
- LocalExecutor, SQLite metadata DB (the Airflow 3.3 default; Postgres is for compose)
- DAGs unpaused at creation (a run of a paused DAG would stay queued), no example DAGs
- workers.min_heartbeat_interval = 1 (slots are released ~5 s late with the default)
- dag_processor.refresh_interval = 30 s (new manifests show up within 30 s, not 5 min)
- scheduler.task_instance_heartbeat_timeout = 45 s, checked every 5 s: a task whose process
  (or worker) died is failed and retried within a minute, not after the default 300 s
  (tasks heartbeat every second: workers.min_heartbeat_interval)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from slicert_ops.orchestrate import settings

DEFAULT_PORT = 8080
TASK_HEARTBEAT_TIMEOUT_S = 45       # same as docker-compose.yaml's default
TASK_HEARTBEAT_CHECK_S = 5
DEFAULT_USER = "admin"
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@dataclass(frozen=True)
class StackPaths:
    """Files of the embedded stack under <SLICERT_HOME>/airflow."""

    state: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackPaths:
        return cls(settings.state_root(env) / "airflow")

    @property
    def home(self) -> Path:
        return self.state / "home"

    @property
    def cfg_file(self) -> Path:
        return self.home / "airflow.cfg"

    @property
    def db_file(self) -> Path:
        return self.state / "airflow.db"

    @property
    def passwords_file(self) -> Path:
        return self.state / "passwords.json"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.json"

    @property
    def stack_file(self) -> Path:
        return self.state / "stack.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def task_logs(self) -> Path:
        return self.state / "task-logs"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def load_or_create_secrets(paths: StackPaths) -> dict[str, str]:
    """JWT secret, API secret key and Fernet key: generated once, kept across restarts."""
    try:
        data = json.loads(paths.secrets_file.read_text())
        if all(data.get(k) for k in ("jwt_secret", "api_secret_key", "fernet_key")):
            return data
    except (OSError, ValueError):
        pass
    import base64

    data = {
        "jwt_secret": secrets.token_urlsafe(48),
        "api_secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    write_private(paths.secrets_file, json.dumps(data, indent=1) + "\n")
    return data


def load_or_create_passwords(paths: StackPaths, user: str = DEFAULT_USER) -> dict[str, str]:
    """The simple auth manager's password file: JSON {user: password}, mode 600."""
    try:
        data = json.loads(paths.passwords_file.read_text())
        if isinstance(data, dict) and data.get(user):
            os.chmod(paths.passwords_file, 0o600)
            return data
    except (OSError, ValueError):
        pass
    data = {user: secrets.token_urlsafe(18)}
    write_private(paths.passwords_file, json.dumps(data) + "\n")
    return data


def render_cfg(paths: StackPaths, port: int, secrets_: Mapping[str, str], *,
               parallelism: int, user: str = DEFAULT_USER,
               env: Mapping[str, str] | None = None) -> str:
    root = settings.repo_root(env)
    api = f"http://127.0.0.1:{port}"
    sections: dict[str, dict[str, object]] = {
        "core": {
            "dags_folder": root / "dags",
            "plugins_folder": root / "plugins",
            "executor": "LocalExecutor",
            "parallelism": parallelism,
            "max_active_tasks_per_dag": parallelism,
            "load_examples": "False",
            "dags_are_paused_at_creation": "False",
            "auth_manager": AUTH_MANAGER,
            "simple_auth_manager_users": f"{user}:admin",
            "simple_auth_manager_passwords_file": paths.passwords_file,
            "simple_auth_manager_all_admins": "False",
            "execution_api_server_url": f"{api}/execution/",
            "fernet_key": secrets_["fernet_key"],
            "dagbag_import_timeout": 120,
        },
        "database": {"sql_alchemy_conn": f"sqlite:///{paths.db_file}"},
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "base_url": api,
            "workers": 1,
            "secret_key": secrets_["api_secret_key"],
            "expose_config": "False",
        },
        "api_auth": {"jwt_secret": secrets_["jwt_secret"]},
        "workers": {"min_heartbeat_interval": 1},
        "scheduler": {"enable_health_check": "False",
                      "task_instance_heartbeat_timeout": TASK_HEARTBEAT_TIMEOUT_S,
                      "task_instance_heartbeat_timeout_detection_interval":
                          TASK_HEARTBEAT_CHECK_S},
        "dag_processor": {"refresh_interval": 30, "min_file_process_interval": 60,
                          "parsing_processes": 1, "dag_file_processor_timeout": 180},
        "logging": {"base_log_folder": paths.task_logs, "colored_console_log": "False"},
    }
    lines = ["# Generated by `slicert up` (slicert_ops/orchestrate/airflow_cfg.py); rewritten",
             "# on every start. Holds secrets: keep it private (mode 600).", ""]
    for name, options in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in options.items()]
        lines.append("")
    return "\n".join(lines)


def process_env(paths: StackPaths, extra: Mapping[str, str] | None = None,
                env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of every Airflow process of the stack (and of the tasks they run)."""
    base = dict(os.environ if env is None else env)
    # the caller's Airflow settings must not leak into the stack
    base = {k: v for k, v in base.items()
            if not k.startswith("AIRFLOW__") and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")}
    root = str(settings.repo_root(env))
    pypath = [root] + [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p]
    base.update({
        "AIRFLOW_HOME": str(paths.home),
        "AIRFLOW_CONFIG": str(paths.cfg_file),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(pypath)),
        "SLICERT_ROOT": root,
        "SLICERT_RESULTS_DIR": str(settings.results_dir(env)),
        "SLICERT_ARTIFACTS_DIR": str(settings.artifacts_dir(env)),
        "SLICERT_EXPERIMENTS_DIR": str(settings.experiments_dir(env)),
        "SLICERT_RUNNER": base.get("SLICERT_RUNNER") or "local",
        "PYTHONUNBUFFERED": "1",
        **settings.ALWAYS_ENV,
    })
    base.update(extra or {})
    return base
