"""One DAG per manifest in experiments/, id ``slicert__<experiment name>``.

    plan -> batch (mapped, one task per batch of candidates) -> aggregate -> train

``train`` fits the cost model and decides promotion itself: the new model and the champion
are scored on the same held-out candidates, and a registry version is created (and given the
``champion`` alias) only when the new one is better; the task log states both scores.

Each task runs one ``slicert`` command through SliceRTStageOperator (plugins/), with the
runner chosen by configuration (local / docker / kubernetes). The Params mirror the manifest;
a trigger conf overrides it, e.g. ``{"repeat": 2, "parameters": {"unroll": [1, 4]}}``.
A manifest that does not load shows up as the import error of slicert_manifest_errors.py
naming that manifest (file, field, fix); every other DAG still loads and can be triggered.
Wiring only: the logic lives in slicert_ops.orchestrate.
"""

from __future__ import annotations

from airflow.sdk import dag
from slicert_stage import SliceRTStageOperator

from slicert_ops.orchestrate import dagspec


def experiment_dag(spec: dagspec.ExperimentDag):
    @dag(
        dag_id=spec.dag_id,
        description=f"SliceRT sweep of {spec.manifest_path}",
        doc_md=spec.doc_md(),
        schedule=None,
        catchup=False,
        # Runs of one sweep queue up: they write the same run folders (results/<experiment>/).
        # Each run has its own plan file (plans/<run id>.json), so a queued run, or the
        # nightly DAG planning the same manifest, never changes what a running one measures.
        max_active_runs=1,
        params=spec.params(),
        tags=spec.tags,
        default_args=dagspec.DEFAULT_ARGS,
        user_defined_filters=dagspec.user_defined_filters(),
        auto_register=False,
    )
    def sweep():
        plan = SliceRTStageOperator(
            task_id="plan", argv=spec.plan_argv(), flags=dagspec.PLAN_FLAGS,
            experiment=spec.name, xcom_return="batches", retries=0)
        batches = SliceRTStageOperator.partial(
            task_id="batch", argv=dagspec.batch_argv(plan.output["plan"]),
            flags=dagspec.BATCH_FLAGS, experiment=spec.name,
            map_index_template=dagspec.BATCH_MAP_INDEX_TEMPLATE,
        ).expand(batch=plan.output)
        aggregate = SliceRTStageOperator(
            task_id="aggregate", argv=dagspec.aggregate_argv(plan.output["plan"]),
            flags=dagspec.AGGREGATE_FLAGS, experiment=spec.name,
            trigger_rule=dagspec.AGGREGATE_TRIGGER_RULE)
        train = SliceRTStageOperator(
            task_id="train", argv=spec.train_argv(), enabled=dagspec.TRAIN_ENABLED)
        batches >> aggregate >> train

    return sweep()


# Never raise here: Airflow would mark every DAG of this file stale. Broken manifests are
# reported as the import error of slicert_manifest_errors.py instead.
specs, broken = dagspec.discover()
for spec in specs:
    try:
        globals()[spec.dag_id] = experiment_dag(spec)
    except Exception as exc:  # noqa: BLE001 - isolate: this manifest's DAG only
        broken.append(dagspec.BrokenManifest(spec.manifest_path, f"{type(exc).__name__}: {exc}"))
