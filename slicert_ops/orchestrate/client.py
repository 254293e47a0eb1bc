"""A small Airflow 3 REST API client (stdlib only): JWT login, DAGs, runs, task instances.

    client = AirflowClient.from_password_file("http://127.0.0.1:8080", "passwords.json")
    run = client.trigger("slicert__conv2d_5x5_latency", {"repeat": 2})

Login: ``POST /auth/token`` {"username", "password"} -> {"access_token": JWT}; every API call
sends ``Authorization: Bearer <JWT>``; a 401 triggers one re-login (the token expired).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError, ServiceError

RETRIES = 3  # transient 5xx answers of a busy metadata DB

TERMINAL_RUN_STATES = ("success", "failed")


class ApiError(ServiceError):
    def __init__(self, status: int, method: str, path: str, detail: str) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"Airflow API {method} {path} -> HTTP {status}: {detail}")


def read_password_file(path: str | Path, user: str | None = None) -> tuple[str, str]:
    """(user, password) from a JSON {user: password} file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the password file: {exc.strerror}", file=str(p),
                         fix="run `slicert up` (it writes it) or set AIRFLOW_PASSWORD_FILE") \
            from None
    except ValueError:
        raise InputError("the password file is not JSON {user: password}", file=str(p)) from None
    if not isinstance(data, dict) or not data:
        raise InputError("the password file must be a JSON object {user: password}",
                         file=str(p))
    if user is None:
        user = next(iter(data))
    if user not in data:
        raise InputError(f"no user {user!r} in the password file", file=str(p),
                         fix=f"users there: {', '.join(data)}")
    return user, str(data[user])


class AirflowClient:
    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self.timeout = timeout
        self._token: str | None = None

    @classmethod
    def from_password_file(cls, base_url: str, password_file: str | Path,
                           user: str | None = None) -> AirflowClient:
        username, password = read_password_file(password_file, user)
        return cls(base_url, username, password)

    # ------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                 query: dict[str, Any] | None = None, raw: bool = False,
                 attempt: int = 0) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            if exc.code == 401 and auth and self._token is not None:
                self._token = None  # expired: log in again once
                return self._request(method, path, body, auth=auth, query=query, raw=raw)
            if exc.code >= 500 and method in ("GET", "HEAD") and attempt < RETRIES:
                # SQLite-backed Airflow answers 500 "Database error" when busy: retry reads
                time.sleep(2 ** attempt)
                return self._request(method, path, body, auth=auth, query=query, raw=raw,
                                     attempt=attempt + 1)
            raise ApiError(exc.code, method, path, str(detail)[:2000]) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(f"Airflow API at {self.base_url} is not reachable ({reason}); "
                               "is the stack up? (`slicert up`)") from None
        if raw:
            return payload.decode("utf-8", "replace")
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            if not self.username or self.password is None:
                raise InputError("no Airflow credentials", field="AIRFLOW_PASSWORD_FILE",
                                 fix="give --password-file or export AIRFLOW_PASSWORD_FILE")
            resp = self._request("POST", "/auth/token",
                                 {"username": self.username, "password": self.password},
                                 auth=False)
            self._token = resp["access_token"]
        return self._token

    # ------------------------------------------------------------------ API
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def status_unauthenticated(self, path: str = "/api/v2/dags") -> int:
        """HTTP status of an API call without a token (401/403 expected)."""
        try:
            self._request("GET", path, auth=False)
            return 200
        except ApiError as exc:
            return exc.status

    def dags(self, pattern: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            q: dict[str, Any] = {"limit": 100, "offset": offset}
            if pattern:
                q["dag_id_pattern"] = pattern
            page = self._request("GET", "/api/v2/dags", query=q)
            out += page.get("dags", [])
            offset += 100
            if offset >= page.get("total_entries", 0):
                return out

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{urllib.parse.quote(dag_id)}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v2/importErrors",
                             query={"limit": 100}).get("import_errors", [])

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{urllib.parse.quote(dag_id)}",
                      {"is_paused": False}, query={"update_mask": "is_paused"})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None,
                note: str | None = None) -> dict[str, Any]:
        # A run id of our own makes the trigger safe to retry: a transient 500 (SQLite busy)
        # is retried, and a 409 on a retry means the earlier attempt did create the run.
        run_id = f"manual__slicert_{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}, "dag_run_id": run_id}
        if note:
            body["note"] = note
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns"
        for attempt in range(RETRIES + 1):
            try:
                return self._request("POST", path, body)
            except ApiError as exc:
                if exc.status == 409 and attempt > 0:
                    return self.dag_run(dag_id, run_id)
                if exc.status < 500 or attempt == RETRIES:
                    raise
                time.sleep(2 ** attempt)
        raise AssertionError("unreachable")

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/"
                                    f"{urllib.parse.quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._request(
            "GET", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/"
                   f"{urllib.parse.quote(run_id)}/taskInstances",
            query={"limit": 1000}).get("task_instances", [])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int = -1) -> Any:
        """A task's XCom value (None when it pushed none)."""
        path = (f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}"
                f"/taskInstances/{urllib.parse.quote(task_id)}/xcomEntries/"
                f"{urllib.parse.quote(key)}")
        try:
            data = self._request("GET", path, query={"map_index": map_index})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        value = data.get("value") if isinstance(data, dict) else data
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int,
                 map_index: int = -1) -> str:
        path = (f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}"
                f"/taskInstances/{urllib.parse.quote(task_id)}/logs/{try_number}")
        q: dict[str, Any] = {"full_content": "true"}
        if map_index >= 0:
            q["map_index"] = map_index
        data = self._request("GET", path, query=q)
        content = data.get("content", "") if isinstance(data, dict) else data
        if isinstance(content, list):  # structured log lines
            lines = []
            for item in content:
                if not isinstance(item, dict):
                    lines.append(str(item))
                    continue
                event = str(item.get("event", ""))
                if event.startswith("::"):  # ::group:: / ::endgroup:: folding markers
                    continue
                lines.append(event)
                for err in item.get("error_detail") or []:
                    if isinstance(err, dict):
                        lines += f"{err.get('exc_type')}: {err.get('exc_value')}".splitlines()
            return "\n".join(lines)
        return str(content)

    # ------------------------------------------------------------------ waiting
    def wait_run(self, dag_id: str, run_id: str, *, timeout: float | None = None,
                 poll: float = 2.0, progress: Callable[[dict, list], None] | None = None,
                 ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if progress is not None:
                progress(run, self.task_instances(dag_id, run_id))
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise ServiceError(f"run {run_id} of {dag_id} is still {run.get('state')} "
                                   f"after {timeout:.0f} s")
            time.sleep(poll)
