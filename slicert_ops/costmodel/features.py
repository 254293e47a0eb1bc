"""Feature table: traces / run folders -> (features, targets) per candidate.

Features of a run are its ``tvm_config.json`` features (``f_*``) and the manifest's
``schedule.*``, ``operator.*`` and ``runner.*`` fields, flattened as in the result index.
Numbers and booleans are used as they are; a string field becomes a one-hot column
``<field>=<value>`` (e.g. ``operator.type=conv2d``). The IRQ seed and the repeat are not
features: repeats of a candidate share their features.

Targets per candidate (over its valid repeats): ``kernel_cycles`` = mean,
``max_preemption_latency_cycles`` = max (the worst case seen).

Workers build the same features for a candidate that has not run yet with
``candidate_features(manifest, tvm_config)`` and ``feature_frame([...])``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slicert_ops.errors import InputError
from slicert_ops.report.index import (
    RUN_SCHEMA,
    TRACE_SCHEMA,
    build_index,
    manifest_fields,
    tvm_feature_fields,
)

TARGETS = ["kernel_cycles", "max_preemption_latency_cycles"]
FEATURE_PREFIXES = ("f_", "schedule.", "operator.", "runner.")
# Also features: the cycle model changes every cycle count.
FEATURE_EXTRA = ("versions.cycle_model",)
# Not features: say nothing about the kernel's cost.
NOT_FEATURES = ("runner.timeout_s",)
# Network task candidates: names of the network, task and layers say which layer it is, not
# what it costs (the nf4+ layer features do): left out so that unseen layers rank as well.
NOT_FEATURE_PREFIXES = ("operator.network", "operator.fingerprint", "operator.task",
                        "operator.layers")
# Whole-network runs are not training rows: the model learns per layer (their per-layer
# figures are in their traces; their schedules name layers, not features).
NOT_TRAINING_OPERATORS = ("network",)
TASK_PREFIXES = ("operator.", "runner.")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def encode_features(row: Mapping[str, Any]) -> dict[str, float]:
    """Numeric feature dict from an index-style row (other columns are ignored)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if not (key.startswith(FEATURE_PREFIXES) or key in FEATURE_EXTRA):
            continue
        if key in NOT_FEATURES or key.startswith(NOT_FEATURE_PREFIXES) or _is_missing(value):
            continue
        if isinstance(value, (bool, np.bool_)):
            out[key] = float(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[key] = float(value)
        else:
            out[f"{key}={value}"] = 1.0
    return out


def candidate_features(manifest: Mapping[str, Any],
                       tvm_config: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Features of one candidate from its manifest-like dict (``operator``, ``schedule``,
    ``runner``, ``versions``) and its tvm_config dict (``{"features": {...}}``; before codegen,
    ``{"features": slicert_ops.codegen.features(op, sched)}`` is the same dict)."""
    row = manifest_fields(manifest)
    row.update(tvm_feature_fields(tvm_config))
    return encode_features(row)


def feature_frame(rows: Iterable[Mapping[str, float]],
                  columns: list[str] | None = None) -> pd.DataFrame:
    """DataFrame of feature dicts; one-hot columns missing from a row are 0, others NaN."""
    df = pd.DataFrame(list(rows), dtype="float64")
    if columns is not None:
        df = df.reindex(columns=columns)
    onehot = [c for c in df.columns if "=" in c]
    if onehot:
        df[onehot] = df[onehot].fillna(0.0)
    return df.astype("float64")


def task_key(row: Mapping[str, Any]) -> str:
    """Runs of one operator under one runner configuration compete with each other."""
    items = sorted((k, str(v)) for k, v in row.items()
                   if k.startswith(TASK_PREFIXES) and not _is_missing(v))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


@dataclass
class FeatureTable:
    """Per-candidate training data."""

    X: pd.DataFrame                 # features, one row per candidate
    y: pd.DataFrame                 # TARGETS
    candidate_ids: pd.Series
    tasks: pd.Series                # task key (operator + runner) per candidate
    n_runs: int                     # run folders read
    n_valid_runs: int
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count
    experiments: list[str] = field(default_factory=list)

    @property
    def feature_columns(self) -> list[str]:
        return list(self.X.columns)

    @property
    def onehot_columns(self) -> list[str]:
        return [c for c in self.X.columns if "=" in c]

    def __len__(self) -> int:
        return len(self.X)


def expand_input(pattern: str) -> list[Path]:
    """Trace files matching a glob ('results/**/qemu_trace.json'), or under a folder."""
    path = Path(pattern)
    if path.is_dir():
        return sorted(path.rglob("qemu_trace.json"))
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def index_from_traces(trace_paths: list[Path]) -> pd.DataFrame:
    """Index rows for the run folders holding the given traces (schema-checked)."""
    run_dirs = sorted({p.parent for p in trace_paths if ".tmp-" not in p.parent.name})
    df = build_index(".", run_dirs=run_dirs)
    check_schemas(df)
    return df


def check_schemas(df: pd.DataFrame) -> None:
    for column, expected, what in (("trace_schema", TRACE_SCHEMA, "qemu_trace.json"),
                                   ("manifest_schema", RUN_SCHEMA, "manifest.json")):
        if column not in df:
            continue
        values = df[column]
        bad = df[values.notna() & (values != expected)]
        if len(bad):
            found = sorted(set(bad[column].astype(str)))
            where = ", ".join(str(Path(d) / what) for d in bad["run_dir"].head(3))
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise InputError(
                f"{len(bad)} {what} file(s) carry schema {', '.join(found)}, this version "
                f"reads only {expected}: {where}{more}",
                fix="re-run those candidates with the current pipeline, or train on results "
                    "of one schema version (narrow --input)")


def exclusion_reasons(df: pd.DataFrame) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for _, row in df[~df["valid"].astype(bool)].iterrows():
        if row.get("status") != "ok":
            why = f"status {row.get('status')}"
        elif not row.get("has_trace"):
            why = "no trace"
        elif _is_missing(row.get("correct")) or int(row.get("correct")) != 1:
            why = "output incorrect"
        else:
            why = "validation failed"
        reasons[why] = reasons.get(why, 0) + 1
    return reasons


def build_table(index: pd.DataFrame) -> FeatureTable:
    """Aggregate the valid runs of an index into one training row per candidate."""
    if len(index) and "operator.type" in index:
        index = index[~index["operator.type"].isin(NOT_TRAINING_OPERATORS)]
    n_runs = len(index)
    valid = index[index["valid"].astype(bool)] if n_runs else index
    excluded = exclusion_reasons(index) if n_runs else {}
    feats, targets, cids, tasks = [], [], [], []
    for cid, group in valid.groupby("candidate_id", sort=True):
        first = group.iloc[0].to_dict()
        feats.append(encode_features(first))
        targets.append({
            "kernel_cycles": float(group["kernel_cycles"].astype(float).mean()),
            "max_preemption_latency_cycles":
                float(group["max_preemption_latency_cycles"].astype(float).max()),
        })
        cids.append(cid)
        tasks.append(task_key(first))
    X = feature_frame(feats)
    X = X[sorted(X.columns)] if len(X.columns) else X
    X = X.loc[:, X.notna().any()] if len(X) else X
    experiments = sorted(set(valid["experiment"].dropna().astype(str))) if len(valid) else []
    return FeatureTable(X=X, y=pd.DataFrame(targets, columns=TARGETS, dtype="float64"),
                        candidate_ids=pd.Series(cids, name="candidate_id", dtype=object),
                        tasks=pd.Series(tasks, name="task", dtype=object),
                        n_runs=n_runs, n_valid_runs=len(valid), excluded=excluded,
                        experiments=experiments)


def load_table(pattern: str) -> FeatureTable:
    """Feature table from a trace glob; InputError when nothing matches."""
    traces = expand_input(pattern)
    if not traces:
        raise InputError(f"no trace file matches {pattern!r}", field="--input",
                         fix="quote the glob and use ** for sub-folders, e.g. "
                             "--input 'results/**/qemu_trace.json'")
    return build_table(index_from_traces(traces))
