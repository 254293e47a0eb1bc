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
Wiring only: the logic lives in slicert_ops.orchestrate (dagspec, taskgroup).
"""

from __future__ import annotations

from airflow.sdk import dag
from slicert_stage import SliceRTStageOperator

from slicert_ops.orchestrate import dagspec, taskgroup


def experiment_dag(spec: dagspec.ExperimentDag):
    @dag(**spec.dag_kwargs())
    def sweep():
        aggregate = taskgroup.sweep_tasks(SliceRTStageOperator, spec, taskgroup.TRIGGERED)
        taskgroup.train_task(SliceRTStageOperator, aggregate, argv=spec.train_argv(),
                             enabled=dagspec.TRAIN_ENABLED)

    return sweep()


# Never raises: Airflow would mark every DAG of this file stale. Broken manifests (and DAGs
# that fail to build) are reported as the import error of slicert_manifest_errors.py.
dags, broken = dagspec.build_dags(experiment_dag)
globals().update(dags)
