"""Sweep plans: a manifest expanded once into batches that workers run independently.

Airflow's plan task writes the plan; each mapped batch task reads it. Candidate ids are
fixed at plan time, so every worker measures exactly what was planned, and a worker whose
toolchain differs from the planner's refuses instead of producing different numbers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError
from slicert_ops.manifest import Candidate, Experiment, expand
from slicert_ops.manifest.load import validate
from slicert_ops.rundir import dumps

PLAN_SCHEMA = "slicert-plan/1"


def default_batch_size(n_candidates: int) -> int:
    """Big enough that Airflow's ~0.3 s per task stays small against ~2 s per candidate."""
    return max(4, math.ceil(n_candidates / 32))


PLAN_DIR = "plans"


def plan_path(exp_dir: Path, run_id: str | None = None) -> Path:
    """``EXP/plan.json``, or ``EXP/plans/<run id>.json`` for an orchestrated run: concurrent
    runs of one DAG (or the nightly DAG beside a manual run) never share a plan file."""
    if not run_id:
        return Path(exp_dir) / "plan.json"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return Path(exp_dir) / PLAN_DIR / f"{safe}.json"


def plan_exp_dir(path: Path) -> Path:
    """The experiment folder a plan file belongs to (its runs are written there)."""
    parent = Path(path).resolve().parent
    return parent.parent if parent.name == PLAN_DIR else parent


def write_plan(exp: Experiment, out_root: Path, batch_size: int | None = None,
               conf: dict[str, Any] | None = None,
               run_id: str | None = None) -> tuple[Path, dict[str, Any]]:
    expansion = expand(exp)
    cands = expansion.candidates
    size = batch_size or default_batch_size(len(cands))
    if size < 1:
        raise InputError("--batch-size must be >= 1", field="--batch-size")
    batches = [[c.index for c in cands[i:i + size]] for i in range(0, len(cands), size)]
    if exp.searching:
        # A search is sequential (each round ranks with what the last one measured): one
        # batch task runs it over the whole space, with --jobs workers inside.
        batches = [[c.index for c in cands]]
    plan = {
        "schema": PLAN_SCHEMA,
        "experiment": exp.name,
        "manifest_file": exp.source,
        "manifest": exp.to_dict(),
        "conf": conf or {},
        "candidates": [c.to_dict() for c in cands],
        "skipped": expansion.skipped,
        "batches": batches,
        "run_id": run_id,
    }
    path = plan_path(Path(out_root) / exp.name, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(plan))
    tmp.replace(path)
    return path, plan


def read_plan(path: Path) -> tuple[Experiment, list[Candidate], dict[str, Any]]:
    try:
        plan = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"cannot read the plan: {exc.strerror}", file=str(path),
                         fix="run `slicert stage plan MANIFEST` first") from None
    except ValueError:
        raise InputError("the plan is not valid JSON (corrupt or half-written)",
                         file=str(path), fix="re-run `slicert stage plan`") from None
    if plan.get("schema") != PLAN_SCHEMA:
        raise InputError(f"plan schema {plan.get('schema')!r}, expected {PLAN_SCHEMA!r}",
                         file=str(path), fix="re-run `slicert stage plan`")
    exp = validate(plan["manifest"], plan.get("manifest_file", str(path)))
    cands = [Candidate.from_dict(c) for c in plan["candidates"]]
    return exp, cands, plan


def check_toolchain(cands: list[Candidate], plan_path: Path) -> None:
    from slicert_ops.versions import toolchain_versions

    if not cands:
        return
    mine = toolchain_versions(cands[0].runner.get("board"))
    planned = cands[0].versions
    diff = sorted(k for k in set(planned) | set(mine) if planned.get(k) != mine.get(k))
    if diff:
        details = "; ".join(f"{k}: planned {planned.get(k)!r}, here {mine.get(k)!r}"
                            for k in diff)
        raise InputError(f"this worker's toolchain differs from the planner's ({details})",
                         file=str(plan_path),
                         fix="run every stage from the same worker image, or re-plan")
