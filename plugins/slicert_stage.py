"""SliceRT stage operator: one `slicert ...` command line, run by the configured runner.

The operator holds only the Airflow side: templating (``argv``, ``flags``, ``enabled``),
the runner choice, XCom and the exit-code -> retry mapping. Running the command is
``slicert_ops.orchestrate.runners`` (no Airflow there): ``local`` (the embedded default, a
subprocess), ``docker`` (a limited, unprivileged ``slicert-worker`` container, network
``none`` unless the stage reaches S3/MLflow) or ``kubernetes`` (a pod, with the
``kubernetes`` client). Chosen at run time: operator ``runner`` argument > Airflow Variable
``slicert_runner`` > env ``SLICERT_RUNNER`` > ``local``. Every knob is an environment
variable, documented in ``slicert_ops.orchestrate.settings``.

Exit codes: 0 ok; 2 (bad input) and 1 (some candidates failed) fail the task without retry
(deterministic); anything else (killed, OOM, services down) fails it with retries.

The JSON object a stage prints last on stdout becomes the task's XCom (``xcom_return`` splits
it: the plan task returns ``batches`` and pushes ``plan``). The "MLflow" extra link points at
the sweep's MLflow run (the stage's result, else ``results/<experiment>/sweep.json``): it is
computed from those files when the task ends, never by asking MLflow; Airflow stores it as an
XCom for the UI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from slicert_ops.orchestrate import runners, settings
from slicert_ops.orchestrate.runners import needs_services
from slicert_ops.tracking.links import experiment_url

FALSE_VALUES = ("", "none", "null", "false", "0", "no", "off")


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


def mlflow_url(result: dict[str, Any] | None, experiment: str | None) -> str | None:
    """The sweep's MLflow run (or experiment) from the stage result and the sweep record."""
    ui = settings.mlflow_ui_url()
    if not ui:
        return None
    result = result or {}
    if result.get("mlflow_url"):
        return str(result["mlflow_url"])
    exp_id, run_id = result.get("mlflow_experiment_id"), result.get("mlflow_run_id")
    name = experiment or result.get("experiment")
    if not (exp_id and run_id) and name:
        try:
            data = json.loads((settings.results_dir() / name / "sweep.json").read_text())
            exp_id = exp_id or data.get("experiment_id")
            run_id = run_id or data.get("parent_run_id")
        except (OSError, ValueError, AttributeError):
            pass
    return experiment_url(ui, exp_id, run_id)


class MLflowRunLink(BaseOperatorLink):
    """Task -> the MLflow page of the sweep's run (or of the experiment).

    Airflow 3 calls this on the worker when the task ends and keeps the value as an XCom
    (``_link_MLflowRunLink``), which the UI shows: no call to MLflow, now or later.
    """

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
        super().__init__(**kwargs)
        self.argv = argv
        self.flags = flags or {}
        self.batch = batch
        self.enabled = enabled
        self.experiment = experiment
        self.runner = runner
        self.network = network
        self.xcom_return = xcom_return
        self._runner: runners.Runner | None = None
        self._slicert_mlflow_url: str | None = None

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
        name = settings.resolve_runner(self.runner, self._runner_variable())
        networked = needs_services(argv) if self.network is None else bool(self.network)
        self.log.info("slicert %s  [runner %s, %s]", " ".join(argv), name,
                      "services" if networked else "no network")
        self._runner = runners.make_runner(
            name, on_line=lambda line: self.log.info("%s", line),
            experiment=self.experiment, labels=self._labels(context))
        try:
            res = self._runner.run(argv, networked)
        except runners.RunnerError as exc:
            raise AirflowFailException(str(exc)) from None
        finally:
            self._runner = None
        self.log.info("slicert %s: exit %s after %.1f s", " ".join(argv[:2]), res.exit_code,
                      res.duration_s)
        self._slicert_mlflow_url = mlflow_url(res.result, self.experiment)
        if self._slicert_mlflow_url:  # in the log too, where users land (not only Details)
            self.log.info("MLflow: %s", self._slicert_mlflow_url)
        if not res.ok:
            self._fail(res.exit_code, argv, res.failure_text())
        return self._xcom(res.result, argv, context)

    def _xcom(self, result: dict[str, Any] | None, argv: list[str], context: Any) -> Any:
        if not self.xcom_return:
            return result
        if not result or self.xcom_return not in result:
            raise AirflowFailException(
                f"`slicert {' '.join(argv[:2])}` printed no JSON object with "
                f"{self.xcom_return!r} as its last stdout line")
        ti = context["ti"]
        for key, value in result.items():
            if key != self.xcom_return:
                ti.xcom_push(key=key, value=value)
        return result[self.xcom_return]

    def _labels(self, context: Any) -> dict[str, str]:
        labels = {"org.slicert.task": f"{self.dag_id}.{self.task_id}"}
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None and getattr(ti, "run_id", None):
            labels["org.slicert.run_id"] = str(ti.run_id)
        return labels

    def _runner_variable(self) -> str | None:
        try:
            from airflow.sdk import Variable

            return Variable.get(settings.RUNNER_VARIABLE, default=None)
        except Exception:  # noqa: BLE001 - no Variable backend (tests, dag.test): env decides
            return None

    def _fail(self, rc: int, argv: list[str], tail: str) -> None:
        what = f"`slicert {' '.join(argv[:2])}`"
        if rc == 2:
            raise AirflowFailException(f"{what} rejected its input (exit 2):\n{tail}")
        if rc == 1:
            raise AirflowFailException(f"{what} finished with failures (exit 1):\n{tail}")
        raise AirflowException(f"{what} failed (exit {rc}; retried if retries are left):\n{tail}")

    def on_kill(self) -> None:
        runner = self._runner
        if runner is not None:
            self.log.info("killing the %s stage", runner.name)
            runner.kill()


class SliceRTPlugin(AirflowPlugin):
    """Registers the MLflow extra link so the API server can show it."""

    name = "slicert"
    operator_extra_links = [MLflowRunLink()]
