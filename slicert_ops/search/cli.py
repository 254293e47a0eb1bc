"""The command-line faces of a search (manifest ``experiment.search``, strategy not grid).

- ``slicert run MANIFEST``: search, then the usual result index + report, then the search
  summary (best, budget spent, best-so-far table) and ``search/curve.png``.
- ``slicert stage plan`` writes one batch for a search (it is sequential: each round ranks
  with what the last one measured) and ``slicert stage batch`` runs the search in it, so
  the experiment DAG (plan -> batch -> aggregate -> train -> promote) searches unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment, expand


def _search(exp: Experiment, cands: list[Candidate], out_root: Path, jobs: int,
            progress: bool, tracking: Any) -> Any:
    from slicert_ops.search.run import run_search, search_settings

    s = search_settings(exp)
    space = "TVM-generated schedules" if s["strategy"] == "meta_schedule" else \
        f"{len(cands)} candidates"
    print(f"{exp.name}: search {s['strategy']} over {space}, budget {s.get('budget')} "
          f"x {exp.repeat} repeats, objective {s['objective']!r}, {jobs} job(s) -> "
          f"{Path(out_root) / exp.name}", file=sys.stderr)
    return run_search(exp, cands, out_root, jobs=jobs, progress=progress,
                      sinks=tracking.sinks if tracking else (),
                      cost_model=tracking.cost_model if tracking else None)


def _print_summary(result: Any) -> None:
    from slicert_ops.search.report import format_summary

    print(format_summary(result))
    print(f"\n  curve: {result.exp_dir / 'search' / 'curve.png'}; trials: "
          f"{result.exp_dir / 'search' / 'trials.jsonl'}")


def cmd_search(exp: Experiment, args: argparse.Namespace, jobs: int) -> int:
    """`slicert run` on a search manifest."""
    from slicert_ops.commands_run import _aggregate, _open_tracking, _preflight

    cands = expand(exp).candidates
    _preflight()
    tracking = _open_tracking(exp, args.out, cands) if args.track else None
    result = _search(exp, cands, args.out, jobs, not args.no_progress, tracking)
    _aggregate(result.exp_dir, exp.name, tracking, result.exit_code)
    _print_summary(result)
    return result.exit_code


def search_stage_batch(exp: Experiment, cands: list[Candidate], out_root: Path, jobs: int,
                       track: bool) -> int:
    """`slicert stage batch` of a search plan (the aggregate stage indexes and reports)."""
    from slicert_ops.commands_run import _open_tracking

    tracking = _open_tracking(exp, out_root, cands) if track else None
    result = _search(exp, cands, out_root, jobs, True, tracking)
    if tracking is not None and hasattr(tracking, "finish"):
        tracking.finish()  # the runs are logged in the background: wait for them
    _print_summary(result)
    return result.exit_code
