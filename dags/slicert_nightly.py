"""Nightly sweep: every manifest with ``experiment.nightly: true``, then retrain + promote.

    [per nightly manifest: plan -> batch (mapped) -> aggregate] -> train -> promote

Scheduled "0 2 * * *" (a cron trigger, 02:00 UTC), no catchup, one run at a time. Manifests
that do not load are reported by slicert_experiments.py and left out here. Wiring only.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import TaskGroup, dag
from slicert_stage import SliceRTStageOperator

from slicert_ops.orchestrate import dagspec

nightly_specs = [spec for spec in dagspec.discover()[0] if spec.nightly]


@dag(
    dag_id=dagspec.NIGHTLY_DAG_ID,
    description="nightly sweep of the manifests marked nightly, then cost-model retraining",
    doc_md=__doc__,
    schedule=dagspec.NIGHTLY_SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=[*dagspec.TAGS, "nightly"],
    default_args=dagspec.DEFAULT_ARGS,
    user_defined_filters=dagspec.user_defined_filters(),
    auto_register=False,
)
def nightly_sweep():
    sweeps = []
    for spec in nightly_specs:
        with TaskGroup(group_id=dagspec.group_id(spec.name), tooltip=spec.manifest_path):
            plan = SliceRTStageOperator(
                task_id="plan", argv=dagspec.plan_argv(spec.manifest_path, spec.results_dir, "{}"),
                experiment=spec.name, xcom_return="batches", retries=0)
            batches = SliceRTStageOperator.partial(
                task_id="batch", argv=dagspec.batch_argv(plan.output["plan"]),
                flags=dagspec.NIGHTLY_BATCH_FLAGS, experiment=spec.name,
                map_index_template=dagspec.BATCH_MAP_INDEX_TEMPLATE,
            ).expand(batch=plan.output)
            aggregate = SliceRTStageOperator(
                task_id="aggregate", argv=dagspec.aggregate_argv(plan.output["plan"]),
                flags=dagspec.NIGHTLY_AGGREGATE_FLAGS, experiment=spec.name,
                trigger_rule=dagspec.AGGREGATE_TRIGGER_RULE)
            batches >> aggregate
        sweeps.append(aggregate)
    train = SliceRTStageOperator(
        task_id="train", argv=dagspec.default_train_argv(),
        trigger_rule=dagspec.AGGREGATE_TRIGGER_RULE if sweeps else "all_success")
    promote = SliceRTStageOperator(task_id="promote", argv=dagspec.promote_argv(),
                                   enabled=dagspec.promote_enabled("True"))
    sweeps >> train >> promote


slicert__nightly_sweep = nightly_sweep()
