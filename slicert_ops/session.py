"""A measuring session: open -> measure -> aggregate, for every face that measures.

``slicert run`` (grid or search, one operator or a network) and the orchestrated stages
(``slicert stage batch`` / ``aggregate``) all go through :class:`Session`:

- :meth:`Session.open`: toolchain check, the results folder, tracking (MLflow) when asked;
- :meth:`Session.measure`: the candidates, as the manifest asks: a grid sweep over the local
  farm (``sweep.run_sweep``) or a search (``search.run.run_search``); for a network, per
  tuning task (``network.candidates``), then the whole network;
- :meth:`Session.measure_tuned`: a network's second step: the network with the best measured
  schedule per task (needs the task runs; the aggregate stage runs it in a DAG);
- :meth:`Session.aggregate`: result index, report, closing the tracked sweep, retention.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError
from slicert_ops.manifest import Candidate, Experiment


@dataclass
class Measured:
    """What a session measured: every run's outcome and, for searches, their results."""

    experiment: str
    exp_dir: Path
    outcomes: list[Any] = field(default_factory=list)   # pipeline.RunOutcome
    searches: list[Any] = field(default_factory=list)   # search.tuner.SearchResult
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        bad = any(o.status != "ok" for o in self.outcomes)
        return 1 if bad or any(s.exit_code for s in self.searches) else 0

    def add(self, result: Any) -> None:
        self.outcomes.extend(getattr(result, "outcomes", []) or [])
        if hasattr(result, "trials"):
            self.searches.append(result)


@dataclass
class Session:
    exp: Experiment
    out_root: Path
    jobs: int = 1
    progress: bool = True
    tracking: Any = None
    # what aggregate() built (index, per-layer rows): the end-of-run summary reuses them
    aggregated: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, exp: Experiment, out_root: Path, cands: list[Candidate], *, jobs: int = 1,
             progress: bool = True, track: bool = False, check_tools: bool = True
             ) -> Session:
        if check_tools:
            preflight()
        tracking = None
        if track:
            from slicert_ops.tracking.sweep_sink import open_tracking

            tracking = open_tracking(exp, Path(out_root), cands)
        return cls(exp, Path(out_root), jobs=jobs, progress=progress, tracking=tracking)

    @property
    def exp_dir(self) -> Path:
        return self.out_root / self.exp.name

    # ----------------------------------------------------------------------------- measure
    def measure(self, cands: list[Candidate], *, tuned: bool = True) -> Measured:
        """Measure ``cands`` as the manifest asks (grid or search; networks per task, then
        with ``tuned`` the network of the best schedules: a DAG's batch task leaves that to
        its aggregate task, which sees every batch's runs)."""
        done = Measured(self.exp.name, self.exp_dir)
        if self.exp.is_network:
            self._measure_network(cands, done, tuned)
        elif self.exp.searching:
            done.add(self._search(cands))
        else:
            done.add(self._sweep(cands))
        return done

    def _sweep(self, cands: list[Candidate]) -> Any:
        from slicert_ops.sweep import run_sweep

        t = self.tracking
        return run_sweep(self.exp, cands, self.out_root, jobs=self.jobs,
                         progress=self.progress, sinks=t.sinks if t else (),
                         cost_model=t.cost_model if t else None)

    def _search(self, cands: list[Candidate], name: str | None = None) -> Any:
        from slicert_ops.search.run import run_search

        s = self.exp.search_spec
        space = "TVM-generated schedules" if s.strategy == "meta_schedule" else \
            f"{len(cands)} candidates"
        if self.progress:
            print(f"{self.exp.name}{f' [{name}]' if name else ''}: search {s.strategy} over "
                  f"{space}, budget {s.budget} x {self.exp.repeat} repeats, objective "
                  f"{s.objective!r}, {self.jobs} job(s) -> {self.exp_dir}", file=sys.stderr)
        t = self.tracking
        return run_search(self.exp, cands, self.out_root, jobs=self.jobs,
                          progress=self.progress, sinks=t.sinks if t else (),
                          cost_model=t.cost_model if t else None, name=name)

    def _measure_network(self, cands: list[Candidate], done: Measured, tuned: bool) -> None:
        """Task candidates (swept, or searched task by task), the default networks, then
        the tuned networks (best measured schedule per task)."""
        from slicert_ops.network.candidates import NETWORK_TASK

        if self.exp.searching:
            by_task: dict[str, list[Candidate]] = {}
            for c in cands:
                if c.operator["type"] == NETWORK_TASK:
                    by_task.setdefault(c.operator["task"], []).append(c)
            for task_cands in by_task.values():
                done.add(self._search(task_cands, name=task_cands[0].operator["layers"][0]))
            rest = [c for c in cands if c.operator["type"] != NETWORK_TASK]
            if rest:
                done.add(self._sweep(rest))
        else:
            done.add(self._sweep(cands))
        if tuned:
            best = self.measure_tuned(cands)
            done.outcomes.extend(best.outcomes)
            done.notes.extend(best.notes)

    def measure_tuned(self, cands: list[Candidate]) -> Measured:
        """A network's networks of the best measured schedule per task (nothing when they
        equal the default ones or were measured already: finished runs are reused)."""
        from slicert_ops.network.candidates import tuned_candidates
        from slicert_ops.search.database import read_candidate_metrics
        from slicert_ops.search.objective import cycles_per_us, parse_objective

        done = Measured(self.exp.name, self.exp_dir)
        if not self.exp.is_network:
            return done
        objective = parse_objective(self.exp.search_spec.objective, cycles_per_us(self.exp))
        tuned, notes = tuned_candidates(
            self.exp, cands,
            lambda c: read_candidate_metrics(self.exp_dir, c, self.exp.repeat), objective)
        done.notes.extend(notes)
        if tuned:
            if self.progress:
                print(f"{self.exp.name}: the network with the best schedule per task "
                      f"({objective.describe()}): {len(tuned)} candidate(s)", file=sys.stderr)
            done.add(self._sweep(tuned))
        return done

    # --------------------------------------------------------------------------- aggregate
    def aggregate(self, exit_code: int | None = None) -> tuple[int, dict[str, Any]]:
        """Result index (Parquet) and report; closes the tracked sweep; prunes superseded
        runs. Returns (failed runs, the sweep outcome: counts, paths, links, best)."""
        from slicert_ops.report.outcome import sweep_outcome

        exp_dir = self.exp_dir
        failed = 0
        index = None
        try:
            from slicert_ops.report.index import build_index, write_index
            from slicert_ops.report.report import write_report

            if self.tracking is not None:
                self.tracking.wait_validated()  # the index needs every verdict
            index = build_index(exp_dir.parent, experiment=self.exp.name)
            if len(index):
                write_index(exp_dir, exp_dir / "index.parquet", df=index)
                layers = None
                if self.exp.is_network:  # the traces are read once, for both
                    from slicert_ops.network.report import write_layers_parquet

                    layers = write_layers_parquet(exp_dir)
                write_report(index, exp_dir / "report", self.exp.name, layers=layers)
                self.aggregated = {"index": index, "layers": layers}
                if "status" in index:
                    failed = int((index["status"] != "ok").sum())
        finally:
            if self.tracking is not None:
                self.tracking.close(exp_dir, failed if exit_code is None else exit_code)
        _retention(exp_dir)
        return failed, sweep_outcome(exp_dir, self.exp.name, index)

    def finish(self) -> None:
        """Wait for background logging (a batch task ends only when its runs are logged)."""
        if self.tracking is not None and hasattr(self.tracking, "finish"):
            self.tracking.finish()


    def print_summary(self, measured: Measured) -> None:
        """The end-of-run table(s): sweep best candidates, search summaries, networks and
        the best network's layers."""
        from slicert_ops.sweep import SweepResult, summarize

        if self.exp.is_network:
            from slicert_ops.network.report import network_summary

            print(network_summary(measured.exp_dir, measured.outcomes, measured.notes,
                                  **self.aggregated))
        elif measured.searches:
            from slicert_ops.search.report import format_summary

            for result in measured.searches:
                print(format_summary(result))
                print(f"\n  curve: {result.search_dir / 'curve.png'}; trials: "
                      f"{result.search_dir / 'trials.jsonl'}")
        else:
            from slicert_ops.manifest.expand import operator_spec_from_dict

            macs = operator_spec_from_dict(self.exp.operator).macs
            print(summarize(SweepResult(self.exp.name, measured.exp_dir, measured.outcomes),
                            macs=macs))

def preflight() -> None:
    """Fail before any work when the toolchain is missing (not once per candidate)."""
    from shutil import which

    from slicert_ops.paths import PLUGIN_SO, QEMU_BIN

    missing = [tool for tool in ("arm-none-eabi-gcc", str(QEMU_BIN)) if not which(tool)]
    if missing:
        raise InputError(f"missing tools: {', '.join(missing)}", fix="run `make setup`")
    if not PLUGIN_SO.is_file():
        raise InputError(f"the QEMU cycle plugin is not built ({PLUGIN_SO})",
                         fix="run `make setup` (or `make plugin`)")


def _retention(exp_dir: Path) -> None:
    """The automatic keep-last-K of .superseded/ ($SLICERT_KEEP_SUPERSEDED, default 2)."""
    from slicert_ops.report.retention import KEEP_ENV, keep_from_env, prune_superseded

    keep = keep_from_env()
    if keep is None:
        return
    r = prune_superseded(exp_dir, keep)
    if r.removed:
        print(f"slicert: retention ({KEEP_ENV}={keep}): {r.line()}", file=sys.stderr)
