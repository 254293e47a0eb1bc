"""Search strategies per tuning task of whole networks, against their exhaustive truth.

The network analogue of ``bench/bench_search.py``. Input: a results folder holding
exhaustive ``slicert run`` results of network manifests (every candidate of every task
measured; ``bench/bench_kernels.py --out DIR`` writes one for the MLPerf Tiny examples). A
tuning task's space is its task candidates (``network_task`` runs grouped by
``operator.task``: every schedule of the manifest's space plus the default); the measured
table is the oracle, and ``random`` and ``cost_model`` searches replay from it with the
library's strategies and tuner (nothing is measured), several seeds each, objective
``kernel_cycles``.

For every network and every task whose space holds at least ``--min-space`` (8)
candidates: best found / true best after ceil(5 / 10 / 20 %) of the task's space (at least
1 trial), mean over the seeds and the worst seed, for

- ``random``;
- ``cost_model`` without a prior (its first round, 8 trials, is the space-filling design:
  at these budgets it is that design);
- ``cost_model+prior``: the same strategy with a prior trained on the *other* networks'
  task candidates only (leave one network out; ``search.model.TransferPrior``: what a
  champion trained on earlier experiments knows, without a registry; half of round 0 are
  its best picks);
- with ``--champion``, ``cost_model+champion``: the prior is the cost-model package's
  XGBoost (what ``slicert train`` registers) fitted on the other networks' feature table,
  used through ``ChampionPrior`` exactly as a registered champion is.

Per task also whether the best schedule found at 10 % has the kernel form of the true best
(a tie at the true best counts every form tied). A summary line per network and overall:
the worst-seed ratio at 10 % of each cost_model variant against the 1.03 target, the
share of (task, seed) searches that found the true best's form, and the tuned tasks'
kernel cycles (weighted by how often each task runs) found at 10 % / the best possible.
Exit status 1 when cost_model+prior misses the target on a task.

Usage:
  .venv/bin/python bench/bench_network_search.py RESULTS [--seeds 10] [--min-space 8]
        [--champion] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.manifest import Candidate  # noqa: E402
from slicert_ops.search.base import MeasureResult, SearchContext, SearchStrategy  # noqa: E402
from slicert_ops.search.database import MemoryDatabase  # noqa: E402
from slicert_ops.search.measure import ReplayMeasurer  # noqa: E402
from slicert_ops.search.objective import Objective, parse_objective  # noqa: E402
from slicert_ops.search.space import SearchSpace  # noqa: E402
from slicert_ops.search.strategies import CostModelStrategy, RandomStrategy  # noqa: E402
from slicert_ops.search.tuner import SearchResult, tune  # noqa: E402

FRACTIONS = (0.05, 0.10, 0.20)
TARGET_AT = 0.10
TARGET_RATIO = 1.03
MIN_SPACE = 8
METRIC = "kernel_cycles"
FORM_NAMES = {0: "direct", 1: "block", 2: "im2col", 3: "pointwise", 4: "simd"}
FILL = "bench/bench_kernels.py --out RESULTS (or slicert run experiments/networks/<net>.yaml " \
       "--out RESULTS)"


def budgets_of(n: int) -> list[int]:
    """ceil(fraction x space) per fraction, at least 1 trial, at most the space (a product
    that is an integer up to float noise, e.g. 0.2 x 15, is not rounded up)."""
    return [min(n, max(1, math.ceil(round(f * n, 9)))) for f in FRACTIONS]


def form_of(schedule: Mapping[str, Any]) -> str:
    """The kernel form of a task schedule (no ``form``: an op type without forms)."""
    f = schedule.get("form")
    return FORM_NAMES.get(int(f), str(f)) if f is not None else "-"


# -- the oracle: task spaces read from the results folder -----------------------------------
@dataclass
class TaskSpace:
    """One tuning task's candidates and their measurements (the replay table)."""

    network: str                   # experiment name
    fingerprint: str               # the network's (variants of one network share it)
    task: str                      # task key
    layers: list[str]
    op_type: str
    weight: int                    # how often the task runs in the network
    cands: list[Candidate]
    table: dict[str, MeasureResult]

    @property
    def name(self) -> str:
        more = f" +{len(self.layers) - 1}" if len(self.layers) > 1 else ""
        return f"{self.layers[0]}{more}"

    def true_best(self) -> float | None:
        vals = [r.metrics[METRIC] for r in self.table.values() if r.ok]
        return min(vals, default=None)

    def best_forms(self) -> set[str]:
        """Forms of every candidate at the true best (ties included)."""
        best = self.true_best()
        return {form_of(c.schedule) for c in self.cands
                if self.table[c.id].ok and self.table[c.id].metrics[METRIC] == best}


def load_tasks(results: Path) -> list[TaskSpace]:
    """Every network task of the runs under ``results``, candidates rebuilt from their run
    folders' manifest.json, metrics the mean over valid repeats (invalid: failed)."""
    from slicert_ops.costmodel.features import expand_input, index_from_traces

    if not results.is_dir():
        raise SystemExit(f"{results}: no such results folder; fill it with {FILL}")
    traces = expand_input(str(results))
    if not traces:
        raise SystemExit(f"{results}: no runs (no qemu_trace.json) in this folder; fill it "
                         f"with {FILL}")
    idx = index_from_traces(traces)
    idx = idx[idx.get("operator.type") == "network_task"]
    if idx.empty:
        raise SystemExit(f"{results}: no network task runs ({len(traces)} other runs): fill "
                         f"it with {FILL} (manifests whose tasks have schedule spaces)")
    tasks: dict[tuple[str, str], TaskSpace] = {}
    for cid, group in idx.groupby("candidate_id", sort=False):
        first = group.iloc[0]
        cand = candidate_from_run(Path(first["run_dir"]))
        key = (str(first["experiment"]), str(cand.operator["task"]))
        if key not in tasks:
            op = cand.operator
            tasks[key] = TaskSpace(key[0], str(op.get("fingerprint")), key[1],
                                   list(op.get("layers") or [key[1]]), str(op.get("op_type")),
                                   int(op.get("weight") or 1), [], {})
        valid = group[group["valid"].astype(bool)]
        if len(valid):
            metrics = {m: float(valid[m].astype(float).mean())
                       for m in (METRIC, "wall_cycles", "instructions") if m in valid}
            res = MeasureResult(str(cid), "ok", metrics)
        else:
            res = MeasureResult(str(cid), "failed", error=str(first.get("error") or "invalid"))
        tasks[key].cands.append(cand)
        tasks[key].table[str(cid)] = res
    out = list(tasks.values())
    for t in out:
        t.cands.sort(key=lambda c: c.index)
    return sorted(out, key=lambda t: (t.network, min(c.index for c in t.cands)))


def candidate_from_run(run_dir: Path) -> Candidate:
    """The Candidate a run folder measured (its manifest.json)."""
    m = json.loads((run_dir / "manifest.json").read_text())
    return Candidate(index=int(m["candidate_index"]), id=str(m["candidate_id"]),
                     operator=m["operator"], schedule=m["schedule"], runner=m["runner"],
                     versions=m["versions"], network=m.get("network"))


# -- priors from the other networks ---------------------------------------------------------
def transfer_prior(task: TaskSpace, others: Sequence[TaskSpace], relative: bool = True
                   ) -> Any:
    """``TransferPrior`` for ``task`` fitted on the other networks' task candidates; by
    default with the within-task ranking blended in (``relative``: a form seen only on
    costly layers elsewhere is not taken for a costly form)."""
    from slicert_ops.search.model import TransferPrior

    return TransferPrior.fit(task.cands, [(o.cands, o.table) for o in others], [METRIC],
                             relative=relative)


class ChampionLike:
    """The cost-model package's XGBoost fitted on other networks' runs (what ``slicert
    train`` registers), answering ``predict(features)`` as a loaded champion does."""

    def __init__(self, index: Any) -> None:
        from slicert_ops.costmodel.features import build_table
        from slicert_ops.costmodel.models import make_model

        table = build_table(index)
        self.model = make_model("xgboost").fit(table.X, table.y[[METRIC]])
        self.name, self.version = "xgboost", f"{len(table)} candidates"

    def prior(self, task: TaskSpace) -> Any:
        from slicert_ops.search.model import ChampionPrior

        space = SearchSpace(list(task.cands))
        frame = self.model.predict(space.features().reindex(
            columns=self.model.feature_columns))
        return ChampionPrior(self.name, self.version,
                             {METRIC: frame[METRIC].to_numpy(dtype="float64")})


# -- replaying searches ---------------------------------------------------------------------
def replay(task: TaskSpace, strategy: SearchStrategy, budget: int, seed: int,
           objective: Objective) -> SearchResult:
    """One search of ``budget`` trials, answered from the task's table."""
    ctx = SearchContext(space=SearchSpace(list(task.cands)), objective=objective,
                        budget=budget, seed=seed)
    return tune(ctx, strategy, ReplayMeasurer(task.table), MemoryDatabase())


def best_trial_at(res: SearchResult, n: int) -> Any:
    """The best feasible trial among the first n (None when none succeeded)."""
    ok = [t for t in res.trials[:n] if t.status == "ok" and t.feasible and t.value is not None]
    return min(ok, key=lambda t: (t.value, t.number), default=None)


@dataclass
class Cell:
    """One strategy at one budget over the seeds."""

    ratios: list[float] = field(default_factory=list)
    forms: list[bool] = field(default_factory=list)   # best found has a true best's form
    found: list[float] = field(default_factory=list)  # best found, cycles

    @property
    def mean(self) -> float:
        return statistics.mean(self.ratios)

    @property
    def worst(self) -> float:
        return max(self.ratios)

    @property
    def at_best(self) -> int:
        return sum(1 for r in self.ratios if r <= 1 + 1e-9)


def trials_to(res: SearchResult, limit: float) -> int | None:
    """Trials until the best found is within ``limit`` (None: never, in these trials)."""
    return next((n for n, v in res.curve() if v is not None and v <= limit), None)


def evaluate(task: TaskSpace, strategies: Mapping[str, Callable[[], SearchStrategy]],
             seeds: int, to_target: bool = False) -> dict[str, Any]:
    """Every strategy, one search per seed at the largest budget, read at each budget (a
    search of budget b proposes exactly the first b trials of a longer one). ``to_target``:
    searches of the whole space, also giving the trials each needs to come within 3 %."""
    objective = parse_objective(METRIC)
    budgets = budgets_of(len(task.cands))
    best = task.true_best()
    forms = task.best_forms()
    rows: dict[str, list[Cell]] = {}
    needed: dict[str, list[int]] = {}
    for name, make in strategies.items():
        cells = [Cell() for _ in budgets]
        needed[name] = []
        for seed in range(seeds):
            res = replay(task, make(), len(task.cands) if to_target else max(budgets), seed,
                         objective)
            if to_target:
                needed[name].append(trials_to(res, best * TARGET_RATIO) or len(task.cands))
            for cell, b in zip(cells, budgets, strict=True):
                t = best_trial_at(res, b)
                v = t.value if t is not None else math.inf
                cell.ratios.append(v / best if best else math.inf)
                cell.found.append(v)
                cell.forms.append(t is not None and form_of(t.schedule) in forms)
        rows[name] = cells
    return {"task": task, "budgets": budgets, "best": best, "forms": forms, "rows": rows,
            "needed": needed if to_target else {}}


# -- output ---------------------------------------------------------------------------------
def task_lines(res: dict[str, Any]) -> list[str]:
    t: TaskSpace = res["task"]
    k = FRACTIONS.index(TARGET_AT)
    head = (f"\n**{t.network} / {t.name}** ({t.op_type}, x{t.weight}): {len(t.cands)} "
            f"candidates, true best {res['best']:,.0f} cycles, form "
            f"{'/'.join(sorted(res['forms']))}; best found / true best, mean of "
            f"{len(next(iter(res['rows'].values()))[0].ratios)} seeds (worst seed; seeds at "
            "the true best), form of the true best found at 10 %\n")
    out = [head, "| strategy | " + " | ".join(
        f"{int(f * 100)} % ({b})" for f, b in zip(FRACTIONS, res["budgets"], strict=True))
        + " | form at 10 % |" + (" trials to 3 % (worst seed) |" if res["needed"] else ""),
        "|---|" + "---|" * (len(res["budgets"]) + 1 + bool(res["needed"]))]
    for name, cells in res["rows"].items():
        need = res["needed"].get(name)
        out.append(f"| {name} | " + " | ".join(
            f"{c.mean:.4f} ({c.worst:.3f}; {c.at_best}/{len(c.ratios)})" for c in cells)
            + f" | {sum(cells[k].forms)}/{len(cells[k].forms)} |"
            + (f" {max(need)} ({max(need) / len(t.cands):.0%}) |" if need else ""))
    return out


def summary(label: str, results: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """Per strategy: worst-seed ratio at 10 % over the tasks (the target for cost_model),
    tasks within 3 %, the best form found, and the tuned tasks' weighted cycles."""
    k = FRACTIONS.index(TARGET_AT)
    out = []
    for name in names:
        cells = [(r, r["rows"][name][k]) for r in results if name in r["rows"]]
        if not cells:
            continue
        worst_r, worst_c = max(cells, key=lambda rc: rc[1].worst)
        within = sum(1 for _, c in cells if c.worst <= TARGET_RATIO)
        forms = sum(sum(c.forms) for _, c in cells)
        searches = sum(len(c.forms) for _, c in cells)
        seeds = len(cells[0][1].found)
        # per seed: sum over tasks of weight x best found, against weight x true best
        best_total = sum(r["task"].weight * r["best"] for r, _ in cells)
        per_seed = [sum(r["task"].weight * c.found[s] for r, c in cells) / best_total
                    for s in range(seeds)]
        needs = [max(r["needed"][name]) / len(r["task"].cands) for r, _ in cells
                 if r["needed"].get(name)]
        need = (f"; share of the space to 3 % (worst seed): median {statistics.median(needs):.0%}, "
                f"max {max(needs):.0%}") if needs else ""
        verdict = "" if not name.startswith("cost_model") else (
            " -> target met" if worst_c.worst <= TARGET_RATIO else " -> target NOT met")
        out.append(f"{label:<22} {name:<20} worst seed at 10 % {worst_c.worst:.4f} "
                   f"({worst_r['task'].name}, {len(worst_r['task'].cands)} candidates, "
                   f"budget {worst_r['budgets'][k]}); {within}/{len(cells)} tasks within "
                   f"{(TARGET_RATIO - 1) * 100:.0f} %; true best's form {forms}/{searches}; "
                   f"tuned cycles / best {statistics.mean(per_seed):.4f} "
                   f"(worst seed {max(per_seed):.4f}){need}{verdict}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="folder of exhaustive network runs "
                    f"(filled by {FILL})")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--min-space", type=int, default=MIN_SPACE,
                    help="tasks with fewer candidates are not searched")
    ap.add_argument("--champion", action="store_true",
                    help="also cost_model with the cost-model package's XGBoost (as "
                         "`slicert train` registers it) trained on the other networks")
    ap.add_argument("--to-target", action="store_true",
                    help="search each whole space: also the trials each strategy needs to "
                         "come within 3 %% (worst seed; slower)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument("--absolute-prior", action="store_true",
                    help="the transfer prior on absolute costs only (no within-task ranking)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # "no champion" notices
    t_all = time.perf_counter()
    tasks = load_tasks(args.results.resolve())
    nets = sorted({t.network for t in tasks})
    lines = [f"# bench/bench_network_search.py {args.results}", ""]
    for n in nets:
        ts = [t for t in tasks if t.network == n]
        big = [t for t in ts if len(t.cands) >= args.min_space]
        failed = sum(1 for t in ts for r in t.table.values() if not r.ok)
        lines.append(f"- {n}: {len(ts)} tasks with a choice, {sum(len(t.cands) for t in ts)} "
                     f"task candidates ({failed} failed); {len(big)} tasks of >= "
                     f"{args.min_space} candidates searched: "
                     + ", ".join(f"{t.name} ({len(t.cands)})" for t in big))
    print("\n".join(lines), flush=True)
    champions: dict[str, ChampionLike] = {}
    if args.champion:
        from slicert_ops.costmodel.features import expand_input, index_from_traces

        idx = index_from_traces(expand_input(str(args.results.resolve())))
        idx = idx[idx.get("operator.type") == "network_task"]
        for n in nets:
            fp = next(t.fingerprint for t in tasks if t.network == n)
            champions[n] = ChampionLike(idx[idx["operator.fingerprint"] != fp])
    results: list[dict[str, Any]] = []
    todo = [t for t in tasks if len(t.cands) >= args.min_space]
    for i, t in enumerate(todo, 1):
        # leave one network out: no task of this network (or a variant of it) trains
        others = [o for o in tasks if o.fingerprint != t.fingerprint]
        strategies: dict[str, Callable[[], SearchStrategy]] = {
            "random": RandomStrategy,
            "cost_model": lambda: CostModelStrategy(use_champion=False),
        }
        if others:
            prior = transfer_prior(t, others, relative=not args.absolute_prior)
            strategies["cost_model+prior"] = lambda p=prior: CostModelStrategy(
                use_champion=False, prior=p)
        if t.network in champions:
            cp = champions[t.network].prior(t)
            strategies["cost_model+champion"] = lambda p=cp: CostModelStrategy(
                use_champion=False, prior=p)
        tt = time.perf_counter()
        res = evaluate(t, strategies, args.seeds, args.to_target)
        results.append(res)
        block = task_lines(res)
        print("\n".join(block), flush=True)
        print(f"[{i}/{len(todo)}] {t.network}/{t.name}: {time.perf_counter() - tt:.1f} s",
              file=sys.stderr, flush=True)
        lines += block
    if not results:
        raise SystemExit(f"{args.results}: no task has >= {args.min_space} candidates")
    names = list(results[0]["rows"])
    names += [n for r in results for n in r["rows"] if n not in names]
    block = ["", f"summary (best found at ceil(10 %) of each task's space, {args.seeds} seeds; "
             f"target: cost_model worst seed <= {TARGET_RATIO}):"]
    for n in nets:
        block += summary(n, [r for r in results if r["task"].network == n], names)
    block += summary("all", results, names)
    block.append(f"bench time {time.perf_counter() - t_all:.0f} s")
    print("\n".join(block))
    lines += block
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    k = FRACTIONS.index(TARGET_AT)
    ok = all(c[k].worst <= TARGET_RATIO for r in results
             for name, c in r["rows"].items() if name in ("cost_model+prior",))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
