"""Run the search a manifest asks for: strategy + measurer + run-folder database + report."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.manifest.load import SearchSpec
from slicert_ops.search.base import Measurer, SearchContext
from slicert_ops.search.database import RunFolderDatabase
from slicert_ops.search.objective import cycles_per_us, parse_objective
from slicert_ops.search.space import SearchSpace
from slicert_ops.search.strategies import make_strategy
from slicert_ops.search.tuner import SearchResult, tune


def search_settings(exp: Experiment) -> SearchSpec:
    """experiment.search, defaults filled at load (the grid's when absent)."""
    return exp.search_spec


def make_context(exp: Experiment, candidates: list[Candidate],
                 budget: int | None = None) -> SearchContext:
    s = search_settings(exp)
    return SearchContext(space=SearchSpace(list(candidates)),
                         objective=parse_objective(s.objective, cycles_per_us(exp)),
                         budget=int(budget or s.budget or len(candidates)),
                         seed=s.seed, rounds=s.rounds, exploration=s.exploration)


def run_search(exp: Experiment, candidates: list[Candidate], out_root: Path, *,
               jobs: int = 1, sinks: Iterable[Any] = (), progress: bool = True,
               cost_model: dict[str, Any] | None = None,
               measurer: Measurer | None = None, name: str | None = None) -> SearchResult:
    """Search ``candidates`` (the manifest's expansion) under exp.search; write
    results/<experiment>/run_NNNN/ (the pipeline's folders) and .../search/ (a network's
    task searches: .../search/<name>/)."""
    from slicert_ops.progress import Progress
    from slicert_ops.search.report import write_outputs

    s = search_settings(exp)
    if s.strategy == "meta_schedule":
        from slicert_ops.search.meta_schedule import run_meta_schedule

        return run_meta_schedule(exp, out_root, jobs=jobs, sinks=sinks, progress=progress)
    ctx = make_context(exp, candidates)
    exp_dir = Path(out_root) / exp.name
    budget = min(ctx.budget, len(candidates))
    if ctx.budget > len(candidates) and progress:
        print(f"  note: budget {ctx.budget} is larger than the space ({len(candidates)} "
              "candidates): every candidate will be measured", file=sys.stderr)
    bar = Progress(budget * exp.repeat, f"{exp.name} ({s.strategy})", enabled=progress)
    own = measurer is None
    if measurer is None:
        from slicert_ops.search.measure import PipelineMeasurer

        measurer = PipelineMeasurer(exp, out_root, jobs=jobs, sinks=sinks, progress=bar,
                                    cost_model=cost_model)
    exp_dir.mkdir(parents=True, exist_ok=True)
    database = RunFolderDatabase(exp_dir, exp.repeat, name=name)

    def replayed(trial: Any) -> None:
        if trial.reused:
            bar.update(ok=exp.repeat, reused=exp.repeat)

    strategy = make_strategy(s.strategy)
    try:
        result = tune(ctx, strategy, measurer, database, on_trial=replayed)
    finally:
        if own:
            measurer.close()
        bar.close()
    result.exp_dir, result.experiment = exp_dir, exp.name
    result.search_dir = database.search_dir
    write_outputs(result, database.search_dir)
    return result
