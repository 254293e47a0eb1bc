"""The result index: one row per run folder, written as Parquet.

Columns (see ``docs/contracts.md`` for the metric names):

- ids and state: ``experiment, run, run_index, candidate_id, candidate_index, repeat, seed,
  status, error, validation_success`` (nullable: only when ``validation.json`` exists -- the
  validation stage writes it into every run folder; folders older than the stage may lack
  it), ``valid`` (status ok, correct == 1, validation not failed, trace present: what the
  cost model trains on), ``validation_failed`` (the verdict's reasons, "; "-joined, when it
  failed), ``run_dir``,
  ``manifest_schema, trace_schema, cycle_model, exit_code``;
- manifest sections flattened with dots: ``schedule.tile_size``, ``operator.type``,
  ``operator.input_0`` (lists are expanded by position), ``runner.irq_period_us``,
  ``versions.tvm``, ``host_timings_s.*``, ``cost_model.*`` (when the pipeline recorded a
  prediction);
- every trace metric under its contract name (``kernel_cycles``, ...);
- every ``tvm_config.json`` feature as ``f_<name>``.

Rows are cached per experiment folder (``ROW_CACHE`` beside ``index.parquet``): a row is
reused while the files it is read from (manifest.json, validation.json, qemu_trace.json,
tvm_config.json) keep their inode, size, mtime and ctime, and while this module's code is
the same; a changed run folder is re-read alone. The frame built from cached rows equals
a full rebuild's (same values, same types: the rows are JSON, as the files they come from).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from slicert_ops import rundir
from slicert_ops.errors import InputError
from slicert_ops.rundir import read_trace_head, write_text_atomic
from slicert_ops.sim.trace import METRIC_NAMES

RUN_SCHEMA = "slicert-run/1"
TRACE_SCHEMA = "slicert-trace/1"

METRICS = list(METRIC_NAMES)  # the contract's metric names, defined once in sim/trace

ID_COLUMNS = ["experiment", "run", "run_index", "candidate_id", "candidate_index", "repeat",
              "seed", "status", "error", "validation_success", "valid", "validation_failed"]

# Manifest sections copied into the index (flattened with dots).
MANIFEST_SECTIONS = ("operator", "schedule", "runner", "versions", "host_timings_s",
                     "prediction", "cost_model")
# Schedule parameters in this order first (manifests are written with sorted keys).
SCHEDULE_ORDER = ("tile_size", "micro_tile", "unroll", "slice")


def flatten(prefix: str, value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` under prefix ``p`` -> ``{"p.a.b_0": 1, "p.a.b_1": 2}``."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            flatten(f"{prefix}_{i}", item, out)
    else:
        out[prefix] = value
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path),
                         fix="the run folder is damaged: re-run the candidate") from exc


def manifest_fields(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest-derived part of an index row (also used for not-yet-run candidates)."""
    row: dict[str, Any] = {}
    for section in MANIFEST_SECTIONS:
        if manifest.get(section) is not None:
            flatten(section, manifest[section], row)
    return row


def tvm_feature_fields(tvm_config: Mapping[str, Any] | None) -> dict[str, Any]:
    features = (tvm_config or {}).get("features") or {}
    return {f"f_{k}": v for k, v in flatten("", features).items()}


def is_valid(row: Mapping[str, Any]) -> bool:
    """Status ok, output correct, validation (when present) passed, metrics present."""
    if row.get("status") != "ok" or not row.get("has_trace"):
        return False
    correct = row.get("correct")
    if correct is None or (isinstance(correct, float) and math.isnan(correct)):
        return False
    if int(correct) != 1:
        return False
    return row.get("validation_success") is not False


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """One index row from a run folder (manifest.json required; other files optional)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("no manifest.json in the run folder", file=str(run_dir),
                         fix="point at results/<experiment> or a folder holding run_NNNN/")
    manifest = _read_json(manifest_path)
    row: dict[str, Any] = {
        "experiment": manifest.get("experiment"),
        "run": manifest.get("run", run_dir.name),
        "run_index": manifest.get("run_index"),
        "candidate_id": manifest.get("candidate_id"),
        "candidate_index": manifest.get("candidate_index"),
        "repeat": manifest.get("repeat"),
        "seed": manifest.get("seed"),
        "status": manifest.get("status"),
        "error": manifest.get("error"),
        "validation_success": None,
        "validation_failed": None,
        "run_dir": str(run_dir),
        "manifest_schema": manifest.get("schema"),
        "manifest_file": manifest.get("manifest_file"),
        "finished_at": manifest.get("finished_at"),
    }
    validation_path = run_dir / "validation.json"
    if validation_path.is_file():  # the validation stage's verdict (validate/stage.py)
        verdict = _read_json(validation_path)
        success = verdict.get("success")
        row["validation_success"] = None if success is None else bool(success)
        if success is False:
            row["validation_failed"] = "; ".join(
                str(f) for f in verdict.get("failed_expectations") or ()) or "failed"
    row.update(manifest_fields(manifest))

    trace_path = run_dir / "qemu_trace.json"
    row["has_trace"] = trace_path.is_file()
    if row["has_trace"]:
        trace = read_trace_head(trace_path)
        row["trace_schema"] = trace.get("schema")
        row["cycle_model"] = trace.get("cycle_model")
        row["exit_code"] = trace.get("exit_code")
        metrics = trace.get("metrics") or {}
        for name in METRICS:
            row[name] = metrics.get(name)
        for name, value in metrics.items():  # metrics added after this list was written
            row.setdefault(name, value)

    tvm_path = run_dir / "tvm_config.json"
    if tvm_path.is_file():
        row.update(tvm_feature_fields(_read_json(tvm_path)))
    row["valid"] = is_valid(row)
    return row


# ---------------------------------------------------------------------------- row cache
ROW_CACHE = ".index-rows.json"   # per experiment folder, beside index.parquet
ROW_CACHE_SCHEMA = "slicert-index-rows/1"
#: the files a row is read from (read_run): a row is stale when any of them changed
ROW_SOURCES = ("manifest.json", "validation.json", "qemu_trace.json", "tvm_config.json")
_CODE_KEY: str | None = None


def _code_key() -> str:
    """A hash of the code that makes a row (this module and the trace-head reader) and of
    the metric names: another version of either never reuses a cached row."""
    global _CODE_KEY
    if _CODE_KEY is None:
        h = hashlib.sha256(ROW_CACHE_SCHEMA.encode())
        for mod in (__file__, rundir.__file__):
            h.update(Path(mod).read_bytes())
        h.update(json.dumps(METRICS).encode())
        _CODE_KEY = h.hexdigest()[:20]
    return _CODE_KEY


def run_stamp(run_dir: Path) -> list[list[int] | None]:
    """(inode, size, mtime ns, ctime ns) of each of a run folder's ROW_SOURCES (None:
    absent): what a cached row is keyed by."""
    out: list[list[int] | None] = []
    base = str(run_dir)
    for name in ROW_SOURCES:
        try:
            st = os.stat(os.path.join(base, name))
        except OSError:
            out.append(None)
            continue
        out.append([st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


def _load_row_cache(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / ROW_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != ROW_CACHE_SCHEMA \
            or data.get("code") != _code_key() or not isinstance(data.get("rows"), dict):
        return {}
    return data["rows"]


def _save_row_cache(folder: Path, rows: dict[str, Any]) -> None:
    doc = {"schema": ROW_CACHE_SCHEMA, "code": _code_key(), "rows": rows}
    try:
        write_text_atomic(folder / ROW_CACHE, json.dumps(doc, separators=(",", ":")))
    except OSError:  # a read-only results folder: no cache, the index all the same
        pass


def read_runs(run_dirs: Iterable[Path], *, cache: bool = True) -> list[dict[str, Any]]:
    """``read_run`` of each folder, in order; with ``cache`` the rows of unchanged folders
    come from their experiment folder's ROW_CACHE (which is then brought up to date)."""
    dirs = [Path(d) for d in run_dirs]
    if not cache:
        return [read_run(d) for d in dirs]
    caches: dict[Path, dict[str, Any]] = {}
    fresh: dict[Path, dict[str, Any]] = {}
    rows = []
    for d in dirs:
        folder = d.parent
        if folder not in caches:
            caches[folder] = _load_row_cache(folder)
            fresh[folder] = {}
        stamp = run_stamp(d)
        hit = caches[folder].get(d.name)
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            row = dict(hit["row"])
        else:
            row = read_run(d)
        row["run_dir"] = str(d)  # in place: the columns keep their order
        fresh[folder][d.name] = {"stamp": stamp, "row": row}
        rows.append(row)
    for folder, entries in fresh.items():
        old = caches[folder]
        # keep the entries of folders not read this time (another call's selection)
        merged = {**old, **entries}
        if merged != old:
            _save_row_cache(folder, merged)
    return rows


RUN_DIR_RE = re.compile(r"^run_\d+$")


def find_run_dirs(results_dir: str | Path) -> list[Path]:
    """Completed run folders under results_dir: ``run_NNNN/manifest.json``, skipping
    in-progress ``run_NNNN.tmp-*`` folders and hidden ones (``.superseded/``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InputError("results folder not found", file=str(results_dir),
                         fix="give the folder the pipeline wrote, e.g. results/")
    dirs = []
    # os.walk, hidden folders pruned (not visited): ~3x faster than rglob on 540 runs
    for top, subdirs, files in os.walk(results_dir, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        if "manifest.json" in files and RUN_DIR_RE.match(os.path.basename(top)):
            dirs.append(Path(top))
    return sorted(dirs)


def _param_key(column: str) -> tuple[int, str]:
    name = column.split(".", 1)[1]
    return (SCHEDULE_ORDER.index(name) if name in SCHEDULE_ORDER else len(SCHEDULE_ORDER), name)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Make object columns Parquet-friendly (one type per column)."""
    for col in df.columns:
        if df[col].dtype != object:
            continue
        types = {type(v) for v in df[col] if v is not None
                 and not (isinstance(v, float) and math.isnan(v))}
        if not types:
            continue
        if types == {bool}:
            df[col] = df[col].astype("boolean")
        elif types <= {int, float} or types <= {int, float, bool}:
            df[col] = pd.to_numeric(df[col], errors="coerce")
        elif types != {str}:
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


def build_index(results_dir: str | Path, run_dirs: Iterable[Path] | None = None,
                experiment: str | None = None, *, cache: bool | None = None) -> pd.DataFrame:
    """One row per completed run folder under results_dir (sorted by experiment, run).

    results_dir may be ``results/`` or one ``results/<experiment>/``; with ``experiment``
    only that experiment's runs are read (from ``results_dir/<experiment>/`` when it exists).
    ``cache``: use (and update) the row cache of each experiment folder; default: when the
    run folders are found here (not for an explicit ``run_dirs``).
    """
    if cache is None:
        cache = run_dirs is None
    if run_dirs is not None:
        dirs = list(run_dirs)
    elif experiment is not None and (Path(results_dir) / experiment).is_dir():
        dirs = find_run_dirs(Path(results_dir) / experiment)
    else:
        dirs = find_run_dirs(results_dir)
    rows = read_runs(dirs, cache=cache)
    if experiment is not None:
        rows = [r for r in rows if r.get("experiment") == experiment]
    if not rows:
        return pd.DataFrame(columns=ID_COLUMNS + ["run_dir"] + METRICS)
    df = pd.DataFrame(rows)
    for name in METRICS:  # e.g. every run failed: no trace, no metric, same columns
        if name not in df:
            df[name] = math.nan
    first = [c for c in ID_COLUMNS + ["run_dir", "manifest_schema", "trace_schema",
                                      "cycle_model", "exit_code", "has_trace"] if c in df]
    groups = [sorted((c for c in df.columns if c.startswith(f"{s}.")), key=_param_key)
              for s in ("operator", "schedule", "runner")]
    metrics = [c for c in METRICS if c in df]
    features = sorted(c for c in df.columns if c.startswith("f_"))
    ordered = first + [c for g in groups for c in g] + metrics + features
    rest = [c for c in df.columns if c not in set(ordered)]
    df = df[ordered + rest]
    df["validation_success"] = df["validation_success"].astype("boolean")
    df = _tidy(df)
    return df.sort_values(["experiment", "run"], kind="stable").reset_index(drop=True)


def write_index(results_dir: str | Path, path: str | Path | None = None,
                df: pd.DataFrame | None = None) -> Path:
    """Write the index of results_dir as Parquet (default: results_dir/index.parquet);
    ``df``: an index already built (not re-read)."""
    path = Path(path) if path else Path(results_dir) / "index.parquet"
    df = build_index(results_dir) if df is None else df
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def schedule_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("schedule.")]
