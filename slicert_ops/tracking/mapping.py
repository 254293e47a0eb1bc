"""What a run folder becomes in MLflow: params, metrics and tags (pure functions)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError
from slicert_ops.rundir import read_trace_head

TAG = "slicert."
KIND_SWEEP, KIND_RUN = "sweep", "measurement"
PARAM_MAX = 6000
STATUS = {"ok": "FINISHED", "finished": "FINISHED", "success": "FINISHED",
          "failed": "FAILED", "error": "FAILED", "killed": "KILLED", "interrupted": "KILLED"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sweep_key(experiment_name: str, manifest: dict) -> str:
    return hashlib.sha256(canonical_json({"experiment": experiment_name,
                                          "manifest": manifest}).encode()).hexdigest()[:16]


def safe_key(key: str) -> str:
    out = "".join(c if (c.isalnum() or c in "_-. /") else "_" for c in key)
    return out[:250] or "_"


def param_value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= PARAM_MAX else text[: PARAM_MAX - 3] + "..."


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"}; lists become JSON text."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[safe_key(key)] = param_value(v)
    elif prefix:
        out[safe_key(prefix)] = param_value(d)
    return out


def run_params(manifest: dict) -> dict[str, str]:
    params: dict[str, str] = {}
    for k in ("candidate_id", "candidate_index", "repeat", "seed", "experiment", "run"):
        if k in manifest:
            params[k] = param_value(manifest[k])
    for section in ("schedule", "operator", "runner", "versions", "logging"):
        if isinstance(manifest.get(section), dict):
            params.update(flatten(manifest[section], section))
    params.update(_cost_model_fields(manifest, "cost_model."))
    return params


def _cost_model_fields(manifest: dict, prefix: str) -> dict[str, str]:
    """The champion model that ranked the run (name, version), keys under ``prefix``."""
    cm = manifest.get("cost_model")
    if not isinstance(cm, dict):
        return {}
    return {f"{prefix}{k}": param_value(cm[k]) for k in ("name", "version") if k in cm}


# Per-layer metrics of a network run logged to MLflow (docs/networks.md).
LAYER_METRICS = ("kernel_cycles", "wall_cycles", "macs_per_cycle", "yield_checks",
                 "max_granule_cycles", "max_preemption_latency_cycles", "deadline_misses")


def _numbers(values: dict, prefix: str, out: dict[str, float]) -> None:
    for k, v in values.items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float)):
            out[safe_key(prefix + k)] = float(v)


def run_metrics(run_dir: Path, manifest: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    trace_path = run_dir / "qemu_trace.json"
    if trace_path.exists():
        with contextlib.suppress(OSError, ValueError, InputError):
            trace = read_trace_head(trace_path)  # metrics and layers, not the events
            _numbers(trace.get("metrics") or {}, "", out)
            # a network run: per-layer figures as layer.<name>.<metric>
            for row in trace.get("layers") or []:
                if isinstance(row, dict) and row.get("layer"):
                    _numbers({k: row.get(k) for k in LAYER_METRICS},
                             f"layer.{row['layer']}.", out)
    for k, v in (manifest.get("host_timings_s") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[safe_key(f"host_{k}_s")] = float(v)
    cm = manifest.get("cost_model")
    if isinstance(cm, dict) and isinstance(cm.get("predicted_kernel_cycles"), (int, float)):
        out["predicted_kernel_cycles"] = float(cm["predicted_kernel_cycles"])
    return out


def is_valid(manifest: dict, verdict: Any) -> bool:
    """A valid measurement: the run finished ok and its verdict passed."""
    return bool(manifest.get("status", "ok") == "ok" and verdict.success)


def run_tags(manifest: dict, run_dir: Path, parent_run_id: str, verdict: Any) -> dict[str, str]:
    versions = manifest.get("versions") or {}
    failed = list(getattr(verdict, "failed_expectations", []) or [])
    tags = {
        "mlflow.parentRunId": parent_run_id,
        "mlflow.source.name": "slicert",
        f"{TAG}kind": KIND_RUN,
        f"{TAG}candidate_id": str(manifest["candidate_id"]),
        f"{TAG}repeat": str(manifest["repeat"]),
        f"{TAG}run": str(manifest.get("run", run_dir.name)),
        f"{TAG}experiment": str(manifest.get("experiment", run_dir.parent.name)),
        f"{TAG}status": str(manifest.get("status", "ok")),
        f"{TAG}valid": "true" if is_valid(manifest, verdict) else "false",
        f"{TAG}validation": "passed" if verdict.success else "failed",
    }
    if failed:
        tags[f"{TAG}failed_expectations"] = param_value(", ".join(failed))[:5000]
    if manifest.get("error"):
        tags[f"{TAG}error"] = str(manifest["error"])[:5000]
    for k in ("cycle_model", "runtime", "plugin"):
        if k in versions:
            tags[f"{TAG}{k}"] = str(versions[k])
    tags.update(_cost_model_fields(manifest, f"{TAG}cost_model."))
    return tags


def sweep_tags(experiment_name: str, key: str, out_dir: Path) -> dict[str, str]:
    return {f"{TAG}kind": KIND_SWEEP, f"{TAG}sweep_key": key,
            f"{TAG}experiment": experiment_name, f"{TAG}out_dir": str(out_dir),
            "mlflow.source.name": "slicert"}
