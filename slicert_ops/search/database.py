"""The search's Database: the run folders (what was measured) + a trial log (what was spent).

- Measurements live where the pipeline writes them, ``results/<experiment>/run_NNNN/``,
  numbered from the candidate's index in the *full* expansion, so a search and a grid
  sweep of the same experiment share folders and each reuses the other's runs.
  :meth:`RunFolderDatabase.lookup` returns a candidate whose every repeat finished
  successfully (``rundir.finished_run``); failed runs are not served (they are measured
  again, as the sweep does).
- The trials of this search go to ``results/<experiment>/search/trials.jsonl`` (rewritten
  from the start by every session, one JSON line per trial, flushed as it happens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError
from slicert_ops.manifest import Candidate
from slicert_ops.rundir import finished_run, read_trace_head, run_name, run_number
from slicert_ops.search.base import Database, MeasureResult, Trial
from slicert_ops.search.objective import aggregate_repeats

SEARCH_DIR = "search"


class MemoryDatabase(Database):
    """Trials in memory; measurements from a dict (tests, bench replays)."""

    def __init__(self, known: dict[str, MeasureResult] | None = None) -> None:
        self.known = dict(known or {})
        self._trials: list[Trial] = []

    def lookup(self, cand: Candidate) -> MeasureResult | None:
        res = self.known.get(cand.id)
        if res is None or not res.ok:
            return None
        return MeasureResult(res.candidate_id, res.status, dict(res.metrics), True,
                             res.error, res.runs)

    def remember(self, cand: Candidate, res: MeasureResult) -> None:
        if res.ok:
            self.known[cand.id] = res

    def commit(self, trial: Trial) -> None:
        self._trials.append(trial)

    def trials(self) -> list[Trial]:
        return list(self._trials)


class RunFolderDatabase(Database):
    def __init__(self, exp_dir: Path, repeat: int, log_name: str = "trials.jsonl",
                 name: str | None = None) -> None:
        self.exp_dir, self.repeat = Path(exp_dir), repeat
        # a network's searches: one folder per task (search/<first layer>/)
        self.search_dir = self.exp_dir / SEARCH_DIR / name if name else \
            self.exp_dir / SEARCH_DIR
        self.search_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.search_dir / log_name
        self.log_path.write_text("")
        self._trials: list[Trial] = []

    def lookup(self, cand: Candidate) -> MeasureResult | None:
        got = read_candidate_runs(self.exp_dir, cand, self.repeat)
        if got is None:
            return None
        runs, numbers = got
        return MeasureResult(cand.id, "ok", aggregate_repeats(runs), reused=True,
                             runs=tuple(numbers))

    def commit(self, trial: Trial) -> None:
        self._trials.append(trial)
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(trial.to_dict(), sort_keys=True) + "\n")

    def trials(self) -> list[Trial]:
        return list(self._trials)


def read_candidate_runs(exp_dir: Path, cand: Candidate, repeat: int
                        ) -> tuple[list[dict[str, Any]], list[int]] | None:
    """Metrics and run numbers of every repeat of a candidate (None unless all finished)."""
    runs, numbers = [], []
    for r in range(repeat):
        n = run_number(cand.index, r, repeat)
        run_dir = Path(exp_dir) / run_name(n)
        if finished_run(run_dir, cand.id, r) is None:
            return None
        try:
            head = read_trace_head(run_dir / "qemu_trace.json")
        except (OSError, ValueError, InputError):
            return None
        runs.append(head.get("metrics") or {})
        numbers.append(n)
    return runs, numbers


def read_candidate_metrics(exp_dir: Path, cand: Candidate, repeat: int
                           ) -> dict[str, Any] | None:
    """A candidate's metrics aggregated over its repeats (None unless all finished)."""
    got = read_candidate_runs(exp_dir, cand, repeat)
    return aggregate_repeats(got[0]) if got else None


def read_trials(path: Path) -> list[Trial]:
    """Trials of a search log (for reports after the fact)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            out.append(Trial.from_dict(json.loads(line)))
    return out
