"""`slicert sync`: upload every run folder not yet marked ``.tracked``.

Run folders are ``<dir>/run_NNNN/`` holding ``manifest.json`` (``*.tmp-*`` folders, still
being written, are skipped). Each folder's parent is one sweep: its ``sweep.json`` (written
by ``Tracker.open_sweep``) names the experiment and manifest; without it, the experiment comes
from the runs' manifest.json. Folders are logged in batches (``Tracker.log_runs``) with their
verdicts: a folder's validation.json, or -- a folder written before the validation stage --
one computed now (validate/stage.py: one GX call per suite for the batch). Logging is
idempotent (tags + ``.tracked``): running sync twice, or after a sweep that was partly
logged, creates no duplicate MLflow runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from slicert_ops.errors import InputError, ServiceError
from slicert_ops.tracking.mlflow_log import SWEEP_FILE, TRACKED_FILE, Tracker
from slicert_ops.validate.stage import validate_runs

RUN_DIR_RE = re.compile(r"^run_\d+$")
SYNC_BATCH = 32  # run folders validated (one GX call per suite) and logged together


def find_run_dirs(root: Path | str) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise InputError("results folder does not exist", file=str(root),
                         fix="pass the folder that holds <experiment>/run_NNNN/")
    if (root / "manifest.json").exists() and RUN_DIR_RE.match(root.name):
        return [root]
    found = [m.parent for m in root.rglob("manifest.json")
             if RUN_DIR_RE.match(m.parent.name) and ".tmp-" not in str(m.parent)]
    return sorted(set(found))


def _sweep_for(group: Path, runs: list[Path]) -> tuple[str, dict]:
    sweep_file = group / SWEEP_FILE
    if sweep_file.exists():
        try:
            data = json.loads(sweep_file.read_text())
            return str(data["experiment_name"]), dict(data["manifest"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    experiment = None
    for run in runs:
        try:
            experiment = json.loads((run / "manifest.json").read_text()).get("experiment")
        except (OSError, ValueError):
            continue
        if experiment:
            break
    experiment = str(experiment or group.name)
    # No manifest of the sweep is known: one synthetic sweep per experiment folder.
    return experiment, {"experiment": experiment, "synthesized_by": "slicert sync",
                        "results_dir": group.name}


def sync(results_dir: Path | str, *, tracker: Tracker | None = None,
         progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Upload every untracked run folder under results_dir. Returns counts:
    found, already_tracked, uploaded (newly logged or resumed), invalid (logged as failed
    runs: status failed or validation failed), sweeps.
    Raises ServiceError (naming the service) if MLflow or the object store stay down; the
    message says how many folders were uploaded before, and nothing is marked that was not.
    """
    run_dirs = find_run_dirs(results_dir)
    counts = {"found": len(run_dirs), "already_tracked": 0, "uploaded": 0, "invalid": 0,
              "sweeps": 0}
    groups: dict[Path, list[Path]] = {}
    for d in run_dirs:
        if (d / TRACKED_FILE).exists():
            counts["already_tracked"] += 1
        else:
            groups.setdefault(d.parent, []).append(d)
    pending = sum(len(v) for v in groups.values())
    if not pending:
        return counts
    tracker = tracker or Tracker()
    tracker.check()
    for group, runs in sorted(groups.items()):
        try:
            experiment, manifest = _sweep_for(group, runs)
            parent = tracker.open_sweep(experiment, manifest, group, reopen=False)
            counts["sweeps"] += 1
            for start in range(0, len(runs), SYNC_BATCH):
                chunk = runs[start:start + SYNC_BATCH]
                results = tracker.log_runs(parent, validate_runs(chunk))
                first_error = None
                for run, res in zip(chunk, results, strict=True):
                    if res.error is not None:
                        first_error = first_error or res.error
                        continue
                    counts["uploaded"] += 1
                    if res.valid is False:
                        counts["invalid"] += 1
                    if progress:
                        progress(f"{run}: {res.run_id}"
                                 f"{'' if res.valid is not False else ' (invalid)'}")
                if first_error is not None:
                    raise first_error
        except ServiceError as exc:
            left = pending - counts["uploaded"]
            exc.args = (f"{exc.args[0]} -- sync uploaded {counts['uploaded']} of {pending} "
                        f"pending run folders; {left} stay on disk: run `slicert sync` again "
                        "when the service is back",)
            exc.counts = counts  # type: ignore[attr-defined]
            raise
    return counts
