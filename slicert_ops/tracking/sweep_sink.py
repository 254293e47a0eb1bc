"""`--track`: glue between a sweep and the data plane.

Opens the MLflow parent run, loads the champion cost model once per batch and predicts the
batch's candidates, and for every finished run validates it (Great Expectations) and logs it.
A service outage never loses a measurement: the run stays on disk, unmarked, and
`slicert sync` uploads it later.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment


@dataclass
class Tracking:
    tracker: Any
    parent_run_id: str
    cost_model: dict[str, Any] | None
    deferred: list[Path] = field(default_factory=list)

    @property
    def sinks(self) -> list[Any]:
        return [self.on_run]

    def on_run(self, outcome: Any, run_dir: Path) -> None:
        if not (run_dir / "manifest.json").is_file():
            return
        if outcome.reused and (run_dir / ".tracked").is_file():
            return
        run_id = self.tracker.log_run_or_defer(self.parent_run_id, run_dir)
        if run_id is None:
            self.deferred.append(run_dir)

    def close(self, exp_dir: Path, exit_code: int) -> None:
        report = exp_dir / "report"
        status = "ok" if exit_code == 0 else "failed"
        try:
            self.tracker.close_sweep(self.parent_run_id, status,
                                     report_dir=report if report.is_dir() else None)
        except Exception as exc:  # noqa: BLE001 - the measurements are safe on disk
            print(f"slicert: warning: could not close the MLflow sweep run: {exc}",
                  file=sys.stderr)
        if self.deferred:
            print(f"slicert: {len(self.deferred)} run(s) kept on disk but not uploaded "
                  "(a service was down); upload them with `slicert sync "
                  f"{exp_dir.parent}`", file=sys.stderr)


def open_tracking(exp: Experiment, out_root: Path, cands: list[Candidate]) -> Tracking:
    """Check the services, open the sweep, and predict the candidates with the champion."""
    from slicert_ops.tracking import preflight
    from slicert_ops.tracking.mlflow_log import Tracker

    preflight()
    tracker = Tracker()
    exp_dir = Path(out_root) / exp.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    parent = tracker.open_sweep(exp.name, exp.to_dict(), exp_dir)
    return Tracking(tracker=tracker, parent_run_id=parent,
                    cost_model=champion_predictions(cands))


def champion_predictions(cands: list[Candidate]) -> dict[str, Any] | None:
    """Predictions of the promoted model for these candidates (None without a champion)."""
    if not cands:
        return None
    from slicert_ops.codegen import features
    from slicert_ops.codegen.spec import ScheduleParams
    from slicert_ops.costmodel.features import candidate_features
    from slicert_ops.costmodel.loader import load_champion
    from slicert_ops.manifest.expand import operator_spec_from_dict

    champion = load_champion()
    if champion is None:
        return None
    feats = {}
    for c in cands:
        op = operator_spec_from_dict(c.operator)
        sched = ScheduleParams(**c.schedule)
        manifest_like = {"operator": c.operator, "schedule": c.schedule, "runner": c.runner,
                         "versions": c.versions}
        feats[c.id] = candidate_features(manifest_like, {"features": features(op, sched)})
    return {"name": champion.name, "version": champion.version,
            "predictions": champion.predict_candidates(feats)}
