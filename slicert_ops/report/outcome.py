"""Where a sweep's results went, in a few lines and one JSON object.

``sweep_outcome`` is what `slicert run`, the Airflow ``aggregate`` task (its log and its
XCom) and `slicert submit --wait` show at the end of a sweep: run counts (ok / failed /
invalid), the results folder, ``index.parquet``, the report, the MLflow experiment / sweep
run (a link that opens MLflow's machine-learning view) and the best candidates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where a table is read: `slicert submit` needs none
    import pandas as pd

TOP = 3


def _mlflow(exp_dir: Path) -> dict[str, Any]:
    from slicert_ops.tracking.links import experiment_url, ui_url

    try:
        sweep = json.loads((exp_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}
    exp_id, run_id = sweep.get("experiment_id"), sweep.get("parent_run_id")
    if not exp_id:
        return {}
    ui = ui_url()
    return {"mlflow_experiment_id": str(exp_id), "mlflow_run_id": run_id,
            "mlflow_experiment_url": experiment_url(ui, exp_id),
            "mlflow_url": experiment_url(ui, exp_id, run_id)}


def _best(index: pd.DataFrame, experiment: str) -> dict[str, list[dict[str, Any]]]:
    import pandas as pd

    from slicert_ops.report.report import candidate_table

    if index.empty or "valid" not in index:
        return {}
    runs = index[(index["experiment"] == experiment) & index["valid"].astype(bool)]
    cand = candidate_table(runs)
    if cand.empty:
        return {}
    params = [c for c in cand.columns if c.startswith("schedule.")]

    def rows(table: pd.DataFrame) -> list[dict[str, Any]]:
        out = []
        for _, r in table.head(TOP).iterrows():
            out.append({"candidate_id": str(r["candidate_id"]),
                        "schedule": {p.split(".", 1)[1]: _plain(r[p]) for p in params
                                     if pd.notna(r[p])},
                        "kernel_cycles": _plain(r["kernel_cycles"]),
                        "max_preemption_latency_cycles":
                            _plain(r["max_preemption_latency_cycles"])})
        return out

    by_preempt = cand.sort_values(["max_preemption_latency_cycles", "kernel_cycles",
                                   "candidate_id"])
    return {"by_kernel_cycles": rows(cand), "by_preemption_latency": rows(by_preempt)}


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def sweep_outcome(exp_dir: str | Path, experiment: str, index: pd.DataFrame | None = None,
                  ) -> dict[str, Any]:
    """Counts, paths, MLflow links and best candidates of the sweep in exp_dir."""
    import pandas as pd

    exp_dir = Path(exp_dir).resolve()
    index = index if index is not None else pd.DataFrame()
    if not index.empty and "experiment" in index:
        index = index[index["experiment"] == experiment]
    n = len(index)
    ok = int((index["status"].astype(str) == "ok").sum()) if n and "status" in index else 0
    valid = int(index["valid"].astype(bool).sum()) if n and "valid" in index else 0
    report = exp_dir / "report" / "summary.html"
    out: dict[str, Any] = {
        "experiment": experiment,
        "runs": {"total": n, "valid": valid, "failed": n - ok, "invalid": ok - valid},
        "results": str(exp_dir),
        "index": str(exp_dir / "index.parquet") if (exp_dir / "index.parquet").is_file()
        else None,
        "report": str(report) if report.is_file() else None,
    }
    out.update(_mlflow(exp_dir))
    if n:  # one-sentence answers: impossible deadlines / bounds, parameters without effect
        from slicert_ops.report.answers import answers, experiment_objective

        out["answers"] = answers(index, experiment_objective(exp_dir))
    if n and "operator.type" in index and (index["operator.type"] == "network").any():
        out["networks"] = _networks(index, exp_dir)
        index = index[index["operator.type"] != "network"]  # best: the task candidates
    out["best"] = _best(index, experiment)
    return out


NETWORK_FIELDS = ("candidate_id", "schedules", "meets objective", "network_cycles",
                  "kernel_cycles", "macs_per_cycle", "max_preemption_latency_cycles",
                  "deadline_misses", "rt_jobs")


def _networks(index: pd.DataFrame, exp_dir: Path) -> list[dict[str, Any]]:
    """A network experiment's network candidates, best first (its objective)."""
    from slicert_ops.network.report import (
        default_network_ids,
        experiment_objective,
        network_table,
    )

    table = network_table(index, default_network_ids(exp_dir), experiment_objective(exp_dir))
    rows = []
    for row in table.to_dict("records"):
        rows.append({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
                     if k in NETWORK_FIELDS})
    return rows


def _sched(s: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in s.items())


def outcome_lines(o: dict[str, Any]) -> list[str]:
    """The human-readable face of sweep_outcome (task logs, `slicert submit --wait`)."""
    from slicert_ops.report.fmt import number  # the report's precision

    r = o.get("runs") or {}
    lines = [f"sweep {o.get('experiment')}: {r.get('total', 0)} runs: {r.get('valid', 0)} ok, "
             f"{r.get('failed', 0)} failed, {r.get('invalid', 0)} invalid (wrong output or "
             "failed validation)",
             f"  results: {o.get('results')}",
             f"  index:   {o.get('index') or '(none: no run folders)'}",
             f"  report:  {o.get('report') or '(none)'}"]
    if o.get("mlflow_experiment_url"):
        lines.append(f"  MLflow experiment: {o['mlflow_experiment_url']}")
    if o.get("mlflow_url") and o.get("mlflow_url") != o.get("mlflow_experiment_url"):
        lines.append(f"  MLflow sweep run:  {o['mlflow_url']}")
    for i, net in enumerate(o.get("networks") or []):
        head = "  networks (best first):" if i == 0 else " " * 24
        meets = {True: ", meets the objective", False: ", misses the objective"}.get(
            net.get("meets objective"), "")
        lines.append(f"{head} {net['candidate_id']} ({net.get('schedules')} schedules"
                     f"{meets}): {_fmt(net.get('network_cycles'))} cycles end to end, "
                     f"{number(net.get('macs_per_cycle') or 0)} MACs/cycle, worst preemption "
                     f"{_fmt(net.get('max_preemption_latency_cycles'))} cycles, "
                     f"{_fmt(net.get('deadline_misses'))} deadline misses")
    lines += [f"  answer: {a}" for a in o.get("answers") or ()]
    best = o.get("best") or {}
    what = " (task candidates)" if o.get("networks") else ""
    for key, title in (("by_kernel_cycles", f"best by kernel cycles{what}"),
                       ("by_preemption_latency", f"best by worst preemption latency{what}")):
        for i, b in enumerate(best.get(key) or []):
            head = f"  {title}:" if i == 0 else " " * (len(title) + 3)
            lines.append(f"{head} {b['candidate_id']} {_sched(b['schedule'])}: kernel "
                         f"{_fmt(b['kernel_cycles'])} cycles, worst preemption "
                         f"{_fmt(b['max_preemption_latency_cycles'])} cycles")
    return lines


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)
