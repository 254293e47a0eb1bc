"""The task wiring both SliceRT DAG files share: plan -> batch (mapped) -> aggregate, train.

``sweep_tasks`` builds one manifest's sweep, either directly in the DAG (one DAG per
manifest: task ids ``plan``, ``batch``, ``aggregate``) or inside a TaskGroup (the nightly
DAG: ``<experiment>.plan`` ...). ``SweepOptions`` holds what differs between the two: the
flags rendered per run (from the Params, or fixed) and the conf given to the planner.
Airflow is imported only when a DAG is built; the operator class is passed in by the DAG
file (it lives in plugins/, importable there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slicert_ops.orchestrate import dagspec


@dataclass(frozen=True)
class SweepOptions:
    plan_flags: dict[str, Any] = field(default_factory=dict)
    batch_flags: dict[str, Any] = field(default_factory=dict)
    aggregate_flags: dict[str, Any] = field(default_factory=dict)
    conf: str = dagspec.CONF_TEMPLATE  # what `slicert stage plan --conf` gets


# one DAG per manifest: options from the Params, the trigger conf overrides the manifest
TRIGGERED = SweepOptions(plan_flags=dagspec.PLAN_FLAGS, batch_flags=dagspec.BATCH_FLAGS,
                         aggregate_flags=dagspec.AGGREGATE_FLAGS)
# the nightly DAG has no Params: fixed options, the manifests as they are
NIGHTLY = SweepOptions(batch_flags=dagspec.NIGHTLY_BATCH_FLAGS,
                       aggregate_flags=dagspec.NIGHTLY_AGGREGATE_FLAGS, conf="{}")


def sweep_tasks(stage: type, spec: dagspec.ExperimentDag, options: SweepOptions, *,
                group: bool = False) -> Any:
    """plan -> batch (one mapped task per batch of the plan) -> aggregate; returns aggregate.

    :param stage: the operator class (SliceRTStageOperator)
    :param group: inside a TaskGroup named after the experiment (``dagspec.group_id``)
    """
    if group:
        from airflow.sdk import TaskGroup

        with TaskGroup(group_id=dagspec.group_id(spec.name), tooltip=spec.manifest_path):
            return sweep_tasks(stage, spec, options)
    plan = stage(
        task_id="plan", argv=dagspec.plan_argv(spec.manifest_path, spec.results_dir,
                                               options.conf),
        flags=options.plan_flags, experiment=spec.name, xcom_return="batches", retries=0)
    batches = stage.partial(
        task_id="batch", argv=dagspec.batch_argv(plan.output["plan"]),
        flags=options.batch_flags, experiment=spec.name,
        map_index_template=dagspec.BATCH_MAP_INDEX_TEMPLATE,
    ).expand(batch=plan.output)
    aggregate = stage(
        task_id="aggregate", argv=dagspec.aggregate_argv(plan.output["plan"]),
        flags=options.aggregate_flags, experiment=spec.name,
        trigger_rule=dagspec.AGGREGATE_TRIGGER_RULE)
    batches >> aggregate
    return aggregate


def train_task(stage: type, upstream: Any, *, argv: list[str] | None = None,
               enabled: Any = True) -> Any:
    """Cost-model training after the sweep(s) in ``upstream`` (an aggregate task or a list).

    With several upstream sweeps it runs once all are done, failed ones included (like
    aggregate after its batches); train decides promotion itself.
    """
    many = isinstance(upstream, list) and len(upstream) > 0
    train = stage(task_id="train", argv=argv or dagspec.default_train_argv(), enabled=enabled,
                  trigger_rule=dagspec.AGGREGATE_TRIGGER_RULE if many else "all_success")
    if not isinstance(upstream, list) or many:
        upstream >> train
    return train
