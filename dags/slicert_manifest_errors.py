"""Broken manifests in experiments/, reported as this file's import error (no DAG here).

Airflow 3 marks every DAG of a file with an import error as stale and refuses to trigger it,
so the DAG factory (slicert_experiments.py) never raises; this file raises instead, listing
each manifest that did not load with its file, field and fix. It parses clean (and the
import error goes away) once every manifest loads.
"""

from __future__ import annotations

from pathlib import Path

from slicert_ops.orchestrate import dagspec

dagspec.raise_if_broken(Path(__file__).with_name("slicert_experiments.py"))
