"""Search strategies against the exhaustive truth of several schedule spaces.

For each space (a manifest, ``bench/search_space*.yaml`` by default: conv2d and dense, int8
and float32, with and without IRQ load, 168 to 512 candidates), the whole space is measured
once with the real pipeline (TVM codegen, gcc, QEMU with the cycle plugin; repeat 1, --jobs)
and cached in ``bench/.cache/`` (git-ignored), keyed by the candidate ids. A candidate id
hashes the toolchain, runtime and **cycle-model** versions, so after a change of the cycle
model (cm3-v1 -> cm3-v2) or of the runtime, the next run of this bench measures the spaces
again by itself. The cached table is then the oracle: ``random`` and ``cost_model`` searches
replay from it (nothing is measured), several seeds each.

Reported per space, unconstrained (``kernel_cycles``) and under the space's bound (the
manifest's ``search.objective``, e.g. ``max_preemption_latency_us <= 40``; a code-size bound
where a latency bound is vacuous: no IRQ load, or a latency of 0 for the fastest kernels;
each bound was placed to cut the space, near the middle of the bounded metric's range):
best found / true best after 5 %, 10 % and 20 % of the space, mean over the seeds and the
worst seed, for random and cost_model. A search of budget b proposes exactly the first b
trials of a longer search with the same seed (both strategies are budget-independent), so
one search per seed, read at each budget, gives the same numbers as one search per budget.

Targets (a summary line per space and objective):
  - cost_model within 3 % of the true best at 10 % of the space, worst seed included;
  - cost_model at or ahead of random (mean) at every budget.

``cost_model`` here has no champion (the bench must not depend on what a registry holds): its
first round is the space-filling design. ``--transfer`` adds ``cost_model+prior``: the same
strategy with a prior model trained on the *other* spaces' measurements (other operators,
shapes, dtypes), the way a champion trained on earlier experiments is used.

``--ablation`` adds cost_model without exploration and with a uniform random round 0 (the
effect of each); ``--ms-seeds N`` adds TVM meta_schedule, measured for real.

Usage:
  .venv/bin/python bench/bench_search.py [SPACE.yaml ...] [--seeds 10] [--jobs 2]
        [--measure-only] [--oracle-only] [--any-version] [--transfer] [--ablation]
        [--ms-seeds N] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.manifest import Candidate, Experiment, expand, load_manifest  # noqa: E402
from slicert_ops.search.base import MeasureResult, SearchStrategy  # noqa: E402
from slicert_ops.search.database import MemoryDatabase  # noqa: E402
from slicert_ops.search.measure import ReplayMeasurer  # noqa: E402
from slicert_ops.search.objective import Objective, cycles_per_us, parse_objective  # noqa: E402
from slicert_ops.search.run import make_context  # noqa: E402
from slicert_ops.search.strategies import CostModelStrategy, RandomStrategy  # noqa: E402
from slicert_ops.search.tuner import SearchResult, tune  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
FRACTIONS = (0.05, 0.10, 0.20)
TARGET_AT = 0.10
TARGET_RATIO = 1.03


def default_spaces() -> list[Path]:
    return sorted((ROOT / "bench").glob("search_space*.yaml"))


# -- the oracle: every candidate measured once ----------------------------------------------
def _schedule_key(schedule: dict) -> str:
    return json.dumps(schedule, sort_keys=True)


def exhaustive(exp: Experiment, cands: list[Candidate], jobs: int, refresh: bool = False,
               any_version: bool = False, oracle_only: bool = False,
               ) -> tuple[dict[str, MeasureResult], dict[str, Any]]:
    """{candidate id: MeasureResult} for the whole space, measured once and cached.

    Keyed by the candidate ids (which hash the toolchain, runtime and cycle-model versions):
    a changed version is measured again. ``any_version`` takes the newest cache of this
    space instead (matched by schedule), e.g. while the runtime is being edited."""
    from slicert_ops.search.measure import result_from_outcomes
    from slicert_ops.sweep import run_sweep

    key = hashlib.sha256("".join(c.id for c in cands).encode()).hexdigest()[:12]
    path = CACHE / f"exhaustive-{exp.name}-{key}.json"
    if not path.is_file() and any_version and not refresh:
        older = sorted(CACHE.glob(f"exhaustive-{exp.name}-*.json"),
                       key=lambda p: p.stat().st_mtime)
        if older:
            path = older[-1]
            print(f"{exp.name}: using {path.name} (measured with other versions: "
                  "--any-version)", file=sys.stderr)
    if path.is_file() and not refresh:
        data = json.loads(path.read_text())
        by_sched = data.get("schedules", {})
        results = data["results"]
        table = {}
        for c in cands:
            cid = c.id if c.id in results else by_sched.get(_schedule_key(c.schedule))
            r = results.get(cid) if cid else None
            if r is not None:
                table[c.id] = MeasureResult(c.id, r["status"], r["metrics"],
                                            error=r.get("error"))
        if len(table) == len(cands):
            return table, {**data["cost"], "cached": True, "versions": data.get("versions")}
    if oracle_only:
        raise SystemExit(f"{exp.name}: no cached measurement of this space for these "
                         f"versions ({path.name}); run without --oracle-only to measure it")
    out_root = CACHE / "results"
    if refresh:
        shutil.rmtree(out_root / exp.name, ignore_errors=True)
    print(f"{exp.name}: measuring the whole space once: {len(cands)} candidates x "
          f"{exp.repeat} repeat, {jobs} jobs (cached in {path.relative_to(ROOT)})",
          file=sys.stderr)
    t0 = time.perf_counter()
    sweep = run_sweep(exp, cands, out_root, jobs=jobs, progress=True)
    elapsed = time.perf_counter() - t0
    # runs of earlier toolchain/runtime/cycle-model versions, moved aside by the sweep
    shutil.rmtree(out_root / exp.name / ".superseded", ignore_errors=True)
    by_cand: dict[str, list] = {}
    for o in sweep.outcomes:
        by_cand.setdefault(o.candidate_id, []).append(o)
    table = {cid: result_from_outcomes(cid, outs) for cid, outs in by_cand.items()}
    fresh = sum(1 for o in sweep.outcomes if not o.reused)
    cost = {"candidates": len(cands), "runs": len(sweep.outcomes), "fresh_runs": fresh,
            "jobs": jobs, "elapsed_s": round(elapsed, 1),
            "per_candidate_s": round(elapsed * jobs / max(1, fresh), 3),
            "failed": sum(1 for r in table.values() if not r.ok)}
    if cost["failed"]:
        # not cached: a failed run is often the toolchain or runtime being edited; the next
        # run of the bench measures the failed candidates again (the others are reused)
        print(f"{exp.name}: {cost['failed']} candidates failed: the table is not cached",
              file=sys.stderr)
        return table, {**cost, "cached": False, "versions": cands[0].versions}
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "cost": cost, "versions": cands[0].versions,
        "schedules": {_schedule_key(c.schedule): c.id for c in cands},
        "results": {cid: {"status": r.status, "metrics": r.metrics, "error": r.error}
                    for cid, r in table.items()}}, sort_keys=True))
    return table, {**cost, "cached": False, "versions": cands[0].versions}


@dataclass
class Space:
    path: Path
    exp: Experiment
    cands: list[Candidate]
    table: dict[str, MeasureResult]
    cost: dict[str, Any]
    bound: Objective | None  # the constrained objective of the manifest, if any

    @property
    def name(self) -> str:
        return self.exp.name

    def describe(self) -> str:
        op, r = self.exp.operator, self.exp.runner
        shape = "x".join(map(str, op.get("input", [])))
        what = (f"{op.get('type')} {shape}"
                + (f" {op['kernel'][0]}x{op['kernel'][1]}/{op.get('stride', 1)} -> "
                   f"{op.get('out_channels')} ch" if op.get("type") == "conv2d" else
                   f" -> {op.get('units')} units"))
        irq = (f"IRQ load {r.get('irq_period_us')} us +- {r.get('irq_jitter_us')}"
               if r.get("simulate_irq_load") else "no IRQ load")
        return f"{what}, {op.get('dtype', 'int8')}, {irq}"


def load_space(path: Path, jobs: int, args: argparse.Namespace) -> Space:
    exp = load_manifest(path, ["experiment.repeat=1"])
    cands = expand(exp).candidates
    table, cost = exhaustive(exp, cands, jobs, args.refresh, args.any_version,
                             args.oracle_only)
    text = args.bound or exp.search.objective
    bound = parse_objective(text, cycles_per_us(exp)) if text else None
    return Space(path, exp, cands, table, cost, bound if bound and bound.bounds else None)


# -- replaying searches -------------------------------------------------------------------
def true_best(table: dict[str, MeasureResult], objective: Objective) -> float | None:
    vals = [objective.evaluate(r.metrics) for r in table.values() if r.ok]
    return min((v.value for v in vals if v.feasible and v.value is not None), default=None)


def replay(space: Space, objective: Objective, strategy: SearchStrategy, budget: int,
           seed: int) -> SearchResult:
    ctx = make_context(space.exp, space.cands, budget)
    ctx.objective, ctx.seed = objective, seed
    return tune(ctx, strategy, ReplayMeasurer(space.table), MemoryDatabase())


Cell = tuple[float, float, int, int]  # mean ratio, worst seed, seeds at the true best, seeds


def evaluate(space: Space, objective: Objective, strategies: dict[str, Callable[[], Any]],
             seeds: int) -> dict[str, Any]:
    n = len(space.cands)
    budgets = [max(1, round(f * n)) for f in FRACTIONS]
    best = true_best(space.table, objective)
    rows: dict[str, list[Cell]] = {}
    timing: dict[str, float] = {}
    infeasible: dict[str, float] = {}
    for name, make in strategies.items():
        t = time.perf_counter()
        ratios: list[list[float]] = [[] for _ in budgets]
        bad = []
        for seed in range(seeds):
            res = replay(space, objective, make(), max(budgets), seed)
            for k, b in enumerate(budgets):
                v = res.best_at(b)
                ratios[k].append(v / best if v is not None else float("inf"))
            bad.append(len(res.infeasible) / max(1, len(res.trials)))
        rows[name] = [_cell(r) for r in ratios]
        timing[name] = time.perf_counter() - t
        infeasible[name] = statistics.mean(bad)
    feasible = sum(1 for r in space.table.values()
                   if r.ok and objective.evaluate(r.metrics).feasible)
    return {"space": space.name, "objective": objective.text, "true_best": best,
            "budgets": budgets, "rows": rows, "timing": timing, "seeds": seeds,
            "feasible": feasible, "size": n, "infeasible_share": infeasible,
            "targets": targets(rows, budgets) if "cost_model" in rows else {}}


def targets(rows: dict[str, list[Cell]], budgets: list[int]) -> dict[str, Any]:
    cm, rnd = rows["cost_model"], rows["random"]
    k = FRACTIONS.index(TARGET_AT)
    within = cm[k][1] <= TARGET_RATIO
    ahead = [c[0] <= r[0] + 1e-12 for c, r in zip(cm, rnd, strict=True)]
    return {"within_3pct_at_10pct_worst_seed": within, "worst_at_10pct": cm[k][1],
            "at_or_ahead_of_random": all(ahead), "ahead_per_budget": ahead}


def _cell(ratios: list[float]) -> Cell:
    return (statistics.mean(ratios), max(ratios), sum(1 for r in ratios if r <= 1 + 1e-9),
            len(ratios))


# -- output ---------------------------------------------------------------------------------
def print_table(res: dict[str, Any], out: list[str]) -> None:
    budgets = res["budgets"]
    extra = (f"; {res['feasible']} of {res['size']} feasible"
             if "subject to" in res["objective"] else "")
    out.append(f"\n**{res['space']}**: `{res['objective']}` (true best "
               f"{res['true_best']:,.0f}{extra}); best found / true best, mean of "
               f"{res['seeds']} seeds (worst seed; seeds at the true best)\n")
    out.append("| strategy | " + " | ".join(f"{int(f * 100)} % ({b})"
                                             for f, b in zip(FRACTIONS, budgets, strict=True))
               + " |")
    out.append("|---|" + "---|" * len(budgets))
    for name, cells in res["rows"].items():
        out.append(f"| {name} | " + " | ".join(f"{m:.4f} ({hi:.3f}; {k}/{r})"
                                               for m, hi, k, r in cells) + " |")
    if "subject to" in res["objective"]:
        out.append(f"\ntrials that broke the bound ({budgets[-1]} trials): " + ", ".join(
            f"{k} {v * 100:.0f} %" for k, v in res["infeasible_share"].items()))
    t = res["targets"]
    out.append(f"\ntargets: within 3 % at 10 % (worst seed {t['worst_at_10pct']:.4f}): "
               f"{'yes' if t['within_3pct_at_10pct_worst_seed'] else 'NO'}; at or ahead of "
               f"random at every budget: {'yes' if t['at_or_ahead_of_random'] else 'NO'}"
               + ("" if t["at_or_ahead_of_random"] else
                  f" {['ok' if a else 'behind' for a in t['ahead_per_budget']]}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spaces", nargs="*", type=Path, help="manifests (default: "
                    "bench/search_space*.yaml)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--refresh", action="store_true", help="measure the spaces again")
    ap.add_argument("--any-version", action="store_true",
                    help="replay the newest cache of a space even if the toolchain/runtime/"
                         "cycle-model versions changed since")
    ap.add_argument("--oracle-only", action="store_true",
                    help="never measure: fail when a space is not cached")
    ap.add_argument("--measure-only", action="store_true",
                    help="measure (or check the cache of) every space and stop")
    ap.add_argument("--transfer", action="store_true",
                    help="also cost_model with a prior trained on the other spaces")
    ap.add_argument("--ablation", action="store_true",
                    help="also cost_model without exploration and with a uniform random "
                         "first round instead of the space-filling one")
    ap.add_argument("--ms-seeds", type=int, default=0,
                    help="also TVM meta_schedule (measured for real: slow), this many seeds, "
                         "unconstrained table only")
    ap.add_argument("--bound", help="the bounded objective for every space given, instead of "
                    "the manifests' (e.g. 'kernel_cycles subject to "
                    "max_preemption_latency_us <= 60')")
    ap.add_argument("--unconstrained-only", action="store_true")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # "no champion" notices
    t_all = time.perf_counter()
    paths = [p.resolve() for p in args.spaces] or default_spaces()
    spaces = [load_space(p, args.jobs, args) for p in paths]
    lines = ["# bench/bench_search.py", ""]
    for s in spaces:
        c = s.cost
        lines.append(f"- {s.name} ({s.path.relative_to(ROOT)}): {s.describe()}; "
                     f"{len(s.cands)} candidates, "
                     f"cycle model {(c.get('versions') or {}).get('cycle_model', '?')}; "
                     f"exhaustive measurement {c['runs']} runs in {c['elapsed_s']:.0f} s "
                     f"with {c['jobs']} jobs, {c['failed']} failed"
                     + (" (cached)" if c["cached"] else " (measured now)"))
    print("\n".join(lines))
    if args.measure_only:
        return 0
    results = []
    for s in spaces:
        strategies: dict[str, Callable[[], Any]] = {
            "random": RandomStrategy,
            "cost_model": lambda: CostModelStrategy(use_champion=False),
        }
        if args.ablation:
            strategies["cm, no exploration"] = lambda: CostModelStrategy(
                use_champion=False, exploration=0.0)
            strategies["cm, random round 0"] = lambda: CostModelStrategy(
                use_champion=False, space_filling=False)
        if args.transfer:
            prior = transfer_prior(s, [o for o in spaces if o is not s])
            strategies["cost_model+prior"] = lambda p=prior: CostModelStrategy(
                use_champion=False, prior=p)
        objectives = [parse_objective("kernel_cycles")]
        if s.bound is not None and not args.unconstrained_only:
            objectives.append(s.bound)
        ms_runs = run_ms(s.exp, round(max(FRACTIONS) * len(s.cands)), args.ms_seeds,
                         args.jobs) if args.ms_seeds else []
        for obj in objectives:
            if true_best(s.table, obj) is None:
                note = (f"\n**{s.name}**: `{obj.text}`: no candidate of the space meets the "
                        "bound (measured with these versions): no table; move the bound")
                print(note)
                lines.append(note)
                continue
            res = evaluate(s, obj, strategies, args.seeds)
            if ms_runs and not obj.bounds:
                res["rows"]["meta_schedule (measured)"] = [
                    _cell([(r.best_at(b) or float("inf")) / res["true_best"]
                           for r in ms_runs]) for b in res["budgets"]]
            results.append(res)
            block: list[str] = []
            print_table(res, block)
            print("\n".join(block), flush=True)
            lines += block
    ok = all(r["targets"]["within_3pct_at_10pct_worst_seed"]
             and r["targets"]["at_or_ahead_of_random"] for r in results)
    summary = (f"\nall targets met on {len(results)} tables: {'yes' if ok else 'NO'}; "
               f"bench time {time.perf_counter() - t_all:.0f} s")
    print(summary)
    lines.append(summary)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "bench_search.json").write_text(json.dumps(results, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


def run_ms(exp: Experiment, budget: int, seeds: int, jobs: int) -> list[SearchResult]:
    """TVM meta_schedule on the space's operator, measured for real with our builder and
    runner (its own schedules, beyond the manifest's parameters), one run of the largest
    budget per seed; run folders under bench/.cache/ms/ (a re-run replays them)."""
    from dataclasses import replace

    from slicert_ops.search.meta_schedule import run_meta_schedule

    out_root = CACHE / "ms"
    runs = []
    for seed in range(seeds):
        name = f"{exp.name}_ms_s{seed}"
        ms_exp = replace(exp, name=name, search=replace(exp.search, strategy="meta_schedule",
                                                        objective="kernel_cycles"))
        print(f"meta_schedule seed {seed}: {budget} trials (measured; {out_root / name})",
              file=sys.stderr)
        res = run_meta_schedule(ms_exp, out_root, jobs=jobs, progress=True, budget=budget,
                                seed=seed)
        shutil.rmtree(out_root / name / ".superseded", ignore_errors=True)
        runs.append(res)
    return runs


def transfer_prior(space: Space, others: list[Space]) -> Any:
    """A prior for ``space`` trained on the measurements of the other spaces only."""
    from slicert_ops.search.model import TransferPrior

    return TransferPrior.fit(space.cands, [(o.cands, o.table) for o in others],
                             space.bound.metrics if space.bound else ["kernel_cycles"])


if __name__ == "__main__":
    sys.exit(main())
