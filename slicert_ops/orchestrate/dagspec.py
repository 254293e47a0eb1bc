"""Manifest -> DAG: everything the DAG files need, so that they hold wiring only.

- ``manifest_sources()`` lists the manifest files the DAG factory reads (the one place to add
  a folder); ``discover()`` loads every one of them with the CLI's own loader
  (``slicert_ops.manifest.load_manifest``): valid ones become ``ExperimentDag``s, broken ones
  ``BrokenManifest``s (file + field + fix), so one bad file never hides the others.
- ``ExperimentDag.params()`` mirrors the manifest as Airflow ``Param``s whose JSON schemas are
  derived from the manifest schema table (``slicert_ops.manifest.schema``): the trigger form
  shows the manifest's values, Airflow rejects wrongly *typed* values at trigger time (HTTP 400
  naming the param) and everything else (unknown fields, cross-field rules) is checked by the
  same validation code as the CLI in the first task, ``plan``, which fails naming the field.
- Stage command lines: argv lists (never shell strings) for ``slicert stage plan|batch|
  aggregate`` and ``slicert train`` (which also decides promotion: see
  slicert_ops.costmodel.train).

- ``ExperimentDag.dag_kwargs()`` / ``nightly_dag_kwargs()``: the ``@dag`` arguments;
  ``build_dags()`` builds one DAG per manifest, a failing one becoming a ``BrokenManifest``.
  The task wiring itself (plan -> batch -> aggregate, train) is ``taskgroup``.

Params that steer orchestration rather than the manifest (``batch_size``, ``jobs``,
``track``, ``train``) are stripped from the conf before it reaches ``slicert stage plan``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.orchestrate import settings

DAG_PREFIX = "slicert__"
NIGHTLY_DAG_ID = "slicert__nightly_sweep"
NIGHTLY_SCHEDULE = "0 2 * * *"
NIGHTLY_TIMEZONE = "UTC"
MANIFEST_SUFFIXES = (".yaml", ".yml")
ORCHESTRATION_PARAMS = ("batch_size", "jobs", "track", "train")
TAGS = ("slicert",)
# Jinja filter names registered on every SliceRT DAG (user_defined_filters)
CONF_FILTER = "slicert_manifest_conf"


# ------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class BrokenManifest:
    path: str
    error: str

    def line(self) -> str:
        return self.error if self.error.startswith(self.path) else f"{self.path}: {self.error}"


@dataclass(frozen=True)
class ExperimentDag:
    """One manifest, as the DAG factory sees it."""

    name: str
    manifest_path: str
    manifest: dict[str, Any]  # Experiment.to_dict()["experiment"]
    nightly: bool = False
    results_dir: str = field(default_factory=lambda: str(settings.results_dir()))
    artifacts_dir: str = field(default_factory=lambda: str(settings.artifacts_dir()))

    @property
    def dag_id(self) -> str:
        return dag_id(self.name)

    @property
    def tags(self) -> list[str]:
        return [*TAGS, "experiment", *(["nightly"] if self.nightly else [])]

    # --- Params ---------------------------------------------------------------------------
    def param_specs(self) -> dict[str, dict[str, Any]]:
        """{name: {"default", "schema", "description", "title"}} (no Airflow import)."""
        return param_specs(self.manifest)

    def params(self) -> dict[str, Any]:
        from airflow.sdk import Param

        return {name: Param(spec["default"], description=spec["description"],
                            title=spec["title"], **spec["schema"])
                for name, spec in self.param_specs().items()}

    def doc_md(self) -> str:
        m = self.manifest
        grid = ", ".join(f"`{k}`: {v}" for k, v in m.get("parameters", {}).items())
        return (
            f"### SliceRT sweep `{self.name}`\n\n"
            f"{m.get('description') or ''}\n\n"
            f"Manifest: `{self.manifest_path}` (repeat {m.get('repeat')}; {grid}).\n\n"
            "Tasks: **plan** (validate manifest + conf, expand candidates into batches) → "
            "**batch** (one mapped task per batch: codegen, build, QEMU, validate, log) → "
            "**aggregate** (result index + report; its log says where the results went) → "
            "**train** (cost model: fitted, compared with the champion on the same held-out "
            "data, registered and promoted only when better; the log says why).\n\n"
            "Trigger with conf to override manifest fields, e.g. "
            '`{"repeat": 2, "parameters": {"unroll": [1, 4]}}`; orchestration params: '
            "`batch_size` (candidates per task, empty = automatic), `jobs` (parallel candidates "
            "inside a task), `track` (MLflow + S3), `train` (retrain the cost model, promote "
            "it when better).\n"
        )

    def dag_kwargs(self) -> dict[str, Any]:
        """Arguments of this manifest's ``@dag``."""
        return {
            "dag_id": self.dag_id,
            "description": f"SliceRT sweep of {self.manifest_path}",
            "doc_md": self.doc_md(),
            "schedule": None,
            "params": self.params(),
            "tags": self.tags,
            **_dag_common(),
        }

    # --- stage command lines --------------------------------------------------------------
    def plan_argv(self) -> list[str]:
        return plan_argv(self.manifest_path, self.results_dir)

    def train_argv(self) -> list[str]:
        return train_argv(self.results_dir, self.artifacts_dir)


def dag_id(experiment_name: str) -> str:
    return f"{DAG_PREFIX}{experiment_name}"


def manifest_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir()
                  if p.suffix in MANIFEST_SUFFIXES and p.is_file() and not p.name.startswith("."))


def manifest_sources(directory: str | Path) -> list[Path]:
    """Every manifest file the DAG factory turns into a DAG (add a folder here): the
    operator manifests of experiments/ and the network manifests of experiments/networks/."""
    return manifest_files(directory) + manifest_files(Path(directory) / "networks")


def discover(directory: str | Path | None = None,
             ) -> tuple[list[ExperimentDag], list[BrokenManifest]]:
    """Load every manifest; never raises for a single bad file."""
    directory = Path(directory) if directory else settings.experiments_dir()
    good: list[ExperimentDag] = []
    broken: list[BrokenManifest] = []
    try:
        from slicert_ops.manifest import load_manifest
    except Exception as exc:  # noqa: BLE001 - a broken install must still show up in the UI
        return [], [BrokenManifest(str(directory), f"cannot import slicert_ops.manifest: "
                                                   f"{type(exc).__name__}: {exc}")]
    seen: dict[str, str] = {}
    for path in manifest_sources(directory):
        try:
            exp = load_manifest(path)
            data = exp.to_dict()
            data = data.get("experiment", data)
        except Exception as exc:  # noqa: BLE001 - InputError names file/field/fix
            broken.append(BrokenManifest(str(path), _one_line(exc)))
            continue
        if exp.name in seen:
            broken.append(BrokenManifest(
                str(path), f"experiment.name: {exp.name!r} is already used by {seen[exp.name]} "
                           "(DAG ids must be unique; rename one of them)"))
            continue
        seen[exp.name] = str(path)
        good.append(ExperimentDag(name=exp.name, manifest_path=str(path.resolve()),
                                  manifest=data, nightly=bool(getattr(exp, "nightly", False))))
    return good, broken


def nightly_specs(directory: str | Path | None = None) -> list[ExperimentDag]:
    """The manifests marked ``nightly: true`` (broken ones are reported by the factory)."""
    return [spec for spec in discover(directory)[0] if spec.nightly]


def build_dags(build: Callable[[ExperimentDag], Any], directory: str | Path | None = None,
               ) -> tuple[dict[str, Any], list[BrokenManifest]]:
    """({dag_id: build(spec)}, broken manifests): a DAG that fails to build is reported like
    a manifest that fails to load, and every other DAG is still built."""
    specs, broken = discover(directory)
    dags: dict[str, Any] = {}
    for spec in specs:
        try:
            dags[spec.dag_id] = build(spec)
        except Exception as exc:  # noqa: BLE001 - isolate: this manifest's DAG only
            broken.append(BrokenManifest(spec.manifest_path, f"{type(exc).__name__}: {exc}"))
    return dags, broken


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    from slicert_ops.errors import SliceRTError

    return text if isinstance(exc, SliceRTError) else f"{type(exc).__name__}: {text}"


def broken_report(broken: list[BrokenManifest]) -> str:
    n = len(broken)
    head = (f"{n} manifest{'s' if n != 1 else ''} in experiments/ could not be loaded; "
            "their DAGs are missing, every other manifest's DAG is loaded:")
    return head + "".join(f"\n- {b.line()}" for b in broken)


# ------------------------------------------------------------------------------ Params
def _field_schema(spec: Any) -> dict[str, Any]:
    """JSON schema of one manifest Field (slicert_ops.manifest.schema.Field)."""
    kind = getattr(spec, "kind", None)
    minimum = getattr(spec, "minimum", None)
    if kind == "bool":
        return {"type": "boolean"}
    if kind == "str":
        return {"type": "string"}
    if kind == "enum":
        return {"type": "string", "enum": list(spec.choices)}
    if kind in ("int", "float"):
        s: dict[str, Any] = {"type": "integer" if kind == "int" else "number"}
        if minimum is not None:
            s["minimum"] = minimum
        if getattr(spec, "maximum", None) is not None:
            s["maximum"] = spec.maximum
        return s
    if kind in ("int_list", "shape"):
        item: dict[str, Any] = {"type": "integer"}
        if minimum is not None:
            item["minimum"] = minimum
        s = {"type": "array", "items": item, "minItems": 1}
        if kind == "int_list":
            s["uniqueItems"] = True
        if getattr(spec, "length", None):
            s["minItems"] = s["maxItems"] = spec.length
        return s
    return {}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema.get("type")
    if t and t != "null":
        schema = dict(schema)
        schema["type"] = [t, "null"]
    return schema


def _section_schema(fields: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    props = {}
    for name, spec in fields.items():
        s = _field_schema(spec)
        if values.get(name) is None or getattr(spec, "default", 0) is None:
            s = _nullable(s)
        help_text = getattr(spec, "help", "")
        if help_text:
            s["description"] = help_text
        props[name] = s
    # additionalProperties stays open: unknown names reach `slicert stage plan`, whose error
    # names the field and suggests the closest valid one.
    return {"type": "object", "properties": props}


NETWORK_PARAMETERS_HELP = (
    "a network's schedule spaces: per op type ({\"conv2d\": {\"unroll\": [2, 4]}}), per "
    "layer by name ({\"layers\": {\"conv1\": {\"micro_tile\": [1, 2]}}}) and the "
    "network-wide slice list ({\"slice\": [64]}); docs/networks.md")


def param_specs(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Params mirroring a manifest (experiment level of Experiment.to_dict())."""
    try:
        from slicert_ops.manifest import schema as mschema
        fields = {"experiment": mschema.EXPERIMENT_FIELDS, **mschema.SECTIONS}
    except Exception:  # noqa: BLE001 - schema table renamed: fall back to value types
        fields = {}
    exp_fields = fields.get("experiment", {})
    repeat_schema = _field_schema(exp_fields["repeat"]) if "repeat" in exp_fields \
        else {"type": "integer", "minimum": 1}
    specs: dict[str, dict[str, Any]] = {
        "repeat": {"default": manifest.get("repeat", 1), "schema": repeat_schema,
                   "title": "Repeat",
                   "description": "runs per candidate; repeat r uses IRQ-load seed r"},
    }
    for section, title, desc in (
            ("parameters", "Schedule parameters",
             "the schedule grid: one list of values per parameter (every combination is a "
             "candidate). Give only the lists to change, e.g. {\"unroll\": [1, 4]}"),
            ("runner", "Runner options",
             "QEMU runner options (IRQ load, deadlines, timeouts); give only those to change"),
            ("logging", "Logging", "raw / compressed logs kept beside each run")):
        values = dict(manifest.get(section) or {})
        if section == "parameters" and "model" in manifest:
            # a network: per op type / per layer spaces and the network-wide slice list
            schema = {"type": "object"}
            desc = NETWORK_PARAMETERS_HELP
        elif section in fields:
            schema = _section_schema(fields[section], values)
        else:
            schema = {"type": "object"}
        specs[section] = {"default": values, "schema": schema, "title": title,
                          "description": desc}
    specs.update({
        "batch_size": {"default": None, "schema": {"type": ["integer", "null"], "minimum": 1},
                       "title": "Batch size",
                       "description": "candidates per mapped batch task; empty = automatic "
                                      "(the planner's default keeps Airflow's per-task cost "
                                      "small against the work)"},
        "jobs": {"default": 1, "schema": {"type": "integer", "minimum": 1, "maximum": 64},
                 "title": "Jobs per task",
                 "description": "candidates measured in parallel inside one batch task"},
        "track": {"default": True, "schema": {"type": "boolean"}, "title": "Track",
                  "description": "validate and log every run to MLflow + S3 (needs the "
                                 "services: `slicert up` starts them)"},
        "train": {"default": True, "schema": {"type": "boolean"}, "title": "Train",
                  "description": "retrain the cost model on all results; register and promote "
                                 "it only when it beats the champion on the same held-out "
                                 "data"},
    })
    return specs


# ------------------------------------------------------------------------------ conf
def manifest_conf(conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a dag_run.conf that overrides the manifest."""
    if not conf:
        return {}
    return {k: v for k, v in dict(conf).items() if k not in ORCHESTRATION_PARAMS}


def manifest_conf_json(conf: Mapping[str, Any] | None) -> str:
    """Jinja filter: dag_run.conf -> the JSON given to `slicert stage plan --conf`."""
    return json.dumps(manifest_conf(conf), sort_keys=True, separators=(",", ":"))


def user_defined_filters() -> dict[str, Any]:
    return {CONF_FILTER: manifest_conf_json}


# ------------------------------------------------------------------------------ commands
CONF_TEMPLATE = "{{ dag_run.conf | " + CONF_FILTER + " }}"


RUN_ID_TEMPLATE = "{{ run_id }}"


def plan_argv(manifest_path: str, results: str, conf_template: str = CONF_TEMPLATE) -> list[str]:
    # --run-id: the plan file is per DAG run (results/<exp>/plans/<run id>.json), so two runs
    # of one DAG, or the nightly DAG beside a manual run, never read each other's plan.
    return ["stage", "plan", manifest_path, "--out", results, "--conf", conf_template,
            "--run-id", RUN_ID_TEMPLATE]


def batch_argv(plan_file: Any) -> list[Any]:
    """`--batch K` is appended by the operator's ``batch`` argument (the mapped value)."""
    return ["stage", "batch", plan_file]


def aggregate_argv(plan_file: Any) -> list[Any]:
    return ["stage", "aggregate", plan_file]


def train_argv(results: str, artifacts: str) -> list[str]:
    # The glob is expanded by `slicert train` (no shell here).
    argv = ["train", "--input", f"{results}/*/run_*/qemu_trace.json",
            "--output", f"{artifacts}/cost_model.pkl", "--skip-if-insufficient"]
    return argv


def default_train_argv() -> list[str]:
    return train_argv(str(settings.results_dir()), str(settings.artifacts_dir()))


# Options rendered per run from the Params (see SliceRTStageOperator.flags)
PLAN_FLAGS = {"--batch-size": "{{ params.batch_size }}"}
BATCH_FLAGS = {"--jobs": "{{ params.jobs }}", "--track": "{{ params.track }}"}
AGGREGATE_FLAGS = {"--track": "{{ params.track }}"}
TRAIN_ENABLED = "{{ params.train }}"

# The nightly DAG has no Params: fixed options
NIGHTLY_BATCH_FLAGS = {"--track": "True"}
NIGHTLY_AGGREGATE_FLAGS = {"--track": "True"}


# ------------------------------------------------------------------------------ DAG defaults
DEFAULT_ARGS = {
    "owner": "slicert",
    "retries": 1,  # infrastructure hiccups only: bad input / failed candidates never retry
    "retry_delay": __import__("datetime").timedelta(seconds=15),
}
# aggregate: runs when the plan succeeded and every batch is done, failed ones included (the
# report lists them); skipped (upstream_failed) when the plan itself failed.
AGGREGATE_TRIGGER_RULE = "all_done_min_one_success"
BATCH_MAP_INDEX_TEMPLATE = "batch {{ task.batch }}"


def nightly_timetable() -> Any:
    """``0 2 * * *`` that first fires at the *next* 02:00 after the DAG appears.

    Airflow 3.3's CronTriggerTimetable with ``catchup=False`` and a start_date in the past
    schedules the most recent missed slot at once (a fresh stack started at 10:00 ran the
    02:00 sweep immediately, before its API was even healthy). Without a start_date, the first
    run is decided by ``run_immediately``; its default (False) still runs a slot missed by
    less than 10 % of the period (2.4 h), so it is set to zero: only the next 02:00 counts.
    (Once the DAG has run, a stack stopped over a 02:00 runs that one missed night at restart,
    as any scheduled Airflow DAG does.)
    """
    import datetime

    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(NIGHTLY_SCHEDULE, timezone=NIGHTLY_TIMEZONE,
                                run_immediately=datetime.timedelta(0))


def nightly_dag_kwargs(doc_md: str | None = None) -> dict[str, Any]:
    """Arguments of the nightly DAG's ``@dag``."""
    return {
        "dag_id": NIGHTLY_DAG_ID,
        "description": "nightly sweep of the manifests marked nightly, then cost-model "
                       "retraining",
        "doc_md": doc_md,
        "schedule": nightly_timetable(),  # no start_date: see its docstring
        "tags": [*TAGS, "nightly"],
        **_dag_common(),
    }


def _dag_common() -> dict[str, Any]:
    """What every SliceRT ``@dag`` shares."""
    return {
        "catchup": False,
        # Runs of one DAG queue up: they write the same run folders (results/<experiment>/).
        # Each run has its own plan file (plans/<run id>.json), so a queued run, or the
        # nightly DAG planning the same manifest, never changes what a running one measures.
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS,
        "user_defined_filters": user_defined_filters(),
        "auto_register": False,
    }


def group_id(experiment_name: str) -> str:
    """TaskGroup id of an experiment inside the nightly DAG (no dots allowed there)."""
    return experiment_name.replace(".", "_")


# ------------------------------------------------------------------------------ broken manifests
class BrokenManifests(Exception):  # noqa: N818 - the name is what the Airflow UI shows
    """Raised by dags/slicert_manifest_errors.py: that file's import error lists them."""


def factory_problems(factory_file: str | Path) -> list[BrokenManifest]:
    """The broken manifests (and failed DAG constructions) as the factory DAG file sees them.

    Airflow 3 marks *every* DAG of a file that has an import error as stale and refuses to
    trigger it, so the factory file never raises; a second, DAG-less file calls this and raises
    instead. The factory is executed under a private module name: the DAGs it builds there
    are not collected again.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("_slicert_factory_check", str(factory_file))
    if spec is None or spec.loader is None:
        return [BrokenManifest(str(factory_file), "cannot load the DAG factory file")]
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(getattr(module, "broken", []))


def raise_if_broken(factory_file: str | Path) -> None:
    broken = factory_problems(factory_file)
    if broken:
        raise BrokenManifests(broken_report(broken))
