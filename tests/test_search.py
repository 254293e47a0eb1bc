"""Search (issue #5): objective, manifest section, strategies, resume, meta_schedule.

Unit tests use a fake measurer (a deterministic cost function of the schedule, the one of
tests/support/synthetic_runs.py); the integration tests run the real pipeline (TVM + gcc +
QEMU) on a tiny operator, and TVM meta_schedule with our builder/runner for a few trials.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from support.synthetic_runs import model_cycles

from slicert_ops.errors import InputError
from slicert_ops.manifest import expand, load_manifest
from slicert_ops.manifest.load import validate
from slicert_ops.rundir import RUN_FILES, RunWriter, dumps, run_name, run_number
from slicert_ops.search.base import MeasureResult
from slicert_ops.search.database import MemoryDatabase, RunFolderDatabase
from slicert_ops.search.measure import FunctionMeasurer, Measurer
from slicert_ops.search.objective import CYCLES_PER_US, ObjectiveError, parse_objective
from slicert_ops.search.run import make_context
from slicert_ops.search.strategies import CostModelStrategy, RandomStrategy, make_strategy
from slicert_ops.search.tuner import tune

VERSIONS = {"tvm": "t", "gcc": "g", "qemu": "q", "runtime": "r", "cycle_model": "c",
            "plugin": "p"}
LATENCY_US = 10


def raw_manifest(search: dict | None = None, irq: bool = True, **params) -> dict:
    # the direct form: the synthetic cycle model (tests/support/synthetic_runs.py) knows the
    # tiling and unrolling, not the kernel forms
    exp = {"name": "search_unit",
           "parameters": {"tile_size": [2, 4, 8, 16, 32], "micro_tile": [1, 2, 4, 8, 16],
                          "unroll": [1, 2, 4, 8], "slice": [16, 32, 64, 128],
                          "form": ["direct"], **params},
           "runner": {"simulate_irq_load": irq}}
    if search is not None:
        exp["search"] = search
    return {"experiment": exp}


def space(search: dict | None = None):
    exp = validate(raw_manifest(search or {"strategy": "cost_model", "budget": 16}), "m.yaml")
    return exp, expand(exp, VERSIONS).candidates


def fake_metrics(cand) -> dict:
    m = model_cycles(cand.operator, cand.schedule)
    return {"kernel_cycles": round(m["kernel_cycles"] * (1 + 0.001 * (cand.schedule["slice"] % 7))),
            "max_preemption_latency_cycles": round(m["micro_tile_cycles"] + 40),
            "yield_checks": m["yield_checks"], "correct": 1}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("slicert.costmodel").setLevel(logging.ERROR)
    logging.getLogger("slicert.search").setLevel(logging.ERROR)


# -- objective ----------------------------------------------------------------------------
def test_objective_parsing_and_unit_conversion() -> None:
    obj = parse_objective("kernel_cycles")
    assert obj.metric == "kernel_cycles" and not obj.bounds
    obj = parse_objective("  kernel_cycles   subject to  max_preemption_latency_us <= 40 ")
    assert obj.text == "kernel_cycles subject to max_preemption_latency_us <= 40"
    (b,) = obj.bounds
    assert b.metric == "max_preemption_latency_cycles" and b.limit == 40 * CYCLES_PER_US
    obj = parse_objective("wall_cycles subject to max_preemption_latency_cycles <= 900 and "
                          "text_bytes <= 4096")
    assert [x.metric for x in obj.bounds] == ["max_preemption_latency_cycles", "text_bytes"]
    # the core clock of the manifest (runner.cpu_mhz) converts microseconds
    exp = validate({"experiment": {**raw_manifest({"strategy": "random", "budget": 4,
                                                   "objective": "kernel_cycles subject to "
                                                   "max_preemption_latency_us <= 40"}
                                                  )["experiment"],
                                   "runner": {"simulate_irq_load": True, "cpu_mhz": 80}}},
                   "m.yaml")
    (b80,) = make_context(exp, expand(exp, VERSIONS).candidates).objective.bounds
    assert b80.limit == 40 * 80
    ev = obj.evaluate({"wall_cycles": 10, "max_preemption_latency_cycles": 901,
                       "text_bytes": 10})
    assert ev.value == 10 and not ev.feasible and "901" in ev.violations[0]


@pytest.mark.parametrize("text, fragment", [
    ("cycles", "not a metric a search can minimise"),
    ("kernel_cycles subject to", "not a metric"),
    ("kernel_cycles subject to max_preemption_latency_us >= 4", "only upper bounds"),
    ("kernel_cycles subject to max_preemption_latency_us <= lots", "not a number"),
    ("kernel_cycles subject to latency <= 4", "'latency' is not a metric"),
    ("kernel_cycles subject to irq_count_us <= 4", "not a time metric"),
    ("kernel_cycles subject to text_bytes <= 4 and text_bytes <= 5", "bounded twice"),
    ("kernel_cycles with max_preemption_latency_us <= 4", "subject to"),
    (42, "must be a string"),
])
def test_objective_errors_are_strict_and_say_what_is_valid(text, fragment) -> None:
    with pytest.raises(ObjectiveError, match=fragment):
        parse_objective(text)


# -- manifest -----------------------------------------------------------------------------
def test_manifest_search_section_is_validated_and_round_trips() -> None:
    exp = validate(raw_manifest({"strategy": "random", "budget": 12, "seed": 3,
                                 "objective": "kernel_cycles subject to "
                                              "max_preemption_latency_us<=40"}), "m.yaml")
    assert exp.search.to_dict() == {
        "strategy": "random", "budget": 12, "seed": 3, "rounds": None, "exploration": 0.2,
        "objective": "kernel_cycles subject to max_preemption_latency_us <= 40"}
    again = validate(exp.to_dict(), "m.yaml")
    assert again == exp
    # no search section: a grid sweep, and to_dict has no search key
    plain = validate(raw_manifest(), "m.yaml")
    assert plain.search is None and "search" not in plain.to_dict()["experiment"]


@pytest.mark.parametrize("search, field, fragment", [
    ({"strategy": "annealing", "budget": 4}, "experiment.search.strategy", "not valid"),
    ({"strategy": "random"}, "experiment.search.budget", "is required"),
    ({"strategy": "random", "budget": 0}, "experiment.search.budget", "below the minimum"),
    ({"strategy": "random", "budget": "lots"}, "experiment.search.budget", "integer"),
    ({"strategy": "cost_model", "budget": 4, "exploration": 1.5},
     "experiment.search.exploration", "above 1"),
    ({"strategy": "cost_model", "budget": 4, "objective": "kernel_cycles < 5"},
     "experiment.search.objective", "not a metric"),
    ({"strategy": "random", "budget": 4, "seeed": 1}, "experiment.search.seeed",
     "did you mean 'seed'"),
])
def test_manifest_search_errors_name_the_field(search, field, fragment) -> None:
    with pytest.raises(InputError) as exc:
        validate(raw_manifest(search), "m.yaml")
    assert field in str(exc.value) and fragment in str(exc.value)


def test_latency_bound_without_irq_load_is_rejected() -> None:
    with pytest.raises(InputError, match="simulate_irq_load: true"):
        validate(raw_manifest({"strategy": "random", "budget": 4, "objective":
                               "kernel_cycles subject to max_preemption_latency_us <= 9"},
                              irq=False), "m.yaml")


# -- strategies (fake measurer) -----------------------------------------------------------
def run(strategy, budget: int, seed: int = 0, objective: str = "kernel_cycles",
        measurer: Measurer | None = None, db=None):
    exp, cands = space()
    ctx = make_context(exp, cands, budget)
    ctx.seed, ctx.objective = seed, parse_objective(objective)
    return tune(ctx, strategy, measurer or FunctionMeasurer(fake_metrics),
                db or MemoryDatabase())


def ids(res) -> list[str]:
    return [t.candidate_id for t in res.trials]


def test_random_is_seeded_sampling_without_replacement() -> None:
    a, b = run(RandomStrategy(), 40, seed=1), run(RandomStrategy(), 40, seed=1)
    c = run(RandomStrategy(), 40, seed=2)
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert len(ids(a)) == len(set(ids(a))) == 40
    # a larger budget continues the same sequence
    assert ids(run(RandomStrategy(), 60, seed=1))[:40] == ids(a)


def test_cost_model_is_deterministic_and_beats_random() -> None:
    a, b = run(CostModelStrategy(use_champion=False), 32, seed=4), \
        run(CostModelStrategy(use_champion=False), 32, seed=4)
    assert ids(a) == ids(b) and [t.source for t in a.trials[:8]] == ["init"] * 8
    assert {"model", "explore"} <= {t.source for t in a.trials}
    _, cands = space()
    true_best = min(fake_metrics(c)["kernel_cycles"] for c in cands)
    cm = [run(CostModelStrategy(use_champion=False), 48, seed=s).best.value for s in range(3)]
    rnd = [run(RandomStrategy(), 48, seed=s).best.value for s in range(3)]
    assert sum(cm) <= sum(rnd)
    assert max(cm) <= true_best * 1.03


def test_cost_model_budget_prefix_and_exploration_share() -> None:
    """A search of budget b proposes exactly the first b trials of a longer one (what
    'raising the budget continues' and the bench's one-run-per-seed rely on); exploration
    is mixed into the rounds, and none with exploration 0."""
    long = run(CostModelStrategy(use_champion=False), 40, seed=2)
    for b in (5, 8, 13, 22):
        assert ids(run(CostModelStrategy(use_champion=False), b, seed=2)) == ids(long)[:b]
    rounds: dict[int, list[str]] = {}
    for t in long.trials:
        rounds.setdefault(t.round, []).append(t.source)
    later = [srcs for r, srcs in sorted(rounds.items()) if r > 0]
    assert sum("explore" in srcs for srcs in later) >= len(later) // 2
    greedy = run(CostModelStrategy(use_champion=False, exploration=0.0), 40, seed=2)
    assert "explore" not in {t.source for t in greedy.trials}


def test_space_filling_first_round_covers_every_parameter() -> None:
    import numpy as np

    from slicert_ops.search.space import SearchSpace
    from slicert_ops.search.strategies import _space_filling, _unit_grid

    _, cands = space()
    unit = _unit_grid(SearchSpace(cands))
    assert unit.shape == (len(cands), 4) and unit.min() == 0 and unit.max() == 1

    def spread(idx) -> float:  # smallest pairwise distance of a design
        p = unit[idx]
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
        return float(d[np.triu_indices(len(idx), 1)].min())

    designs = [_space_filling(unit, 8, np.random.default_rng(s)) for s in range(10)]
    randoms = [np.random.default_rng(s).choice(len(unit), 8, replace=False)
               for s in range(10)]
    assert np.mean([spread(d) for d in designs]) > 1.3 * np.mean([spread(r) for r in randoms])
    # every design still reaches both halves of every parameter's range
    for d in designs:
        assert ((unit[d] < 0.5).any(axis=0) & (unit[d] >= 0.5).any(axis=0)).all()
    res = run(CostModelStrategy(use_champion=False), 8, seed=0)
    assert [t.source for t in res.trials] == ["init"] * 8


def test_constraint_model_learns_from_infeasible_measurements() -> None:
    """The bound's own model (trained on every measurement, infeasible ones included)
    predicts feasibility: P(feasible) separates the space's feasible and infeasible
    candidates, and the model's picks are mostly feasible while random's are not."""
    import numpy as np

    from slicert_ops.search.base import MeasureResult
    from slicert_ops.search.model import TreeSearchModel
    from slicert_ops.search.space import SearchSpace

    objective = parse_objective(f"kernel_cycles subject to max_preemption_latency_us <= "
                                f"{LATENCY_US}")
    _, cands = space()
    sp = SearchSpace(cands)
    truth = np.array([objective.evaluate(fake_metrics(c)).feasible for c in cands])
    assert 0.2 < truth.mean() < 0.8
    rng = np.random.default_rng(0)
    train = [cands[i] for i in rng.choice(len(cands), 40, replace=False)]
    model = TreeSearchModel(sp, objective.metrics, seed=0)
    model.update(train, [MeasureResult(c.id, "ok", fake_metrics(c)) for c in train])
    assert any(not objective.evaluate(fake_metrics(c)).feasible for c in train)
    p = model.feasibility(range(len(cands)), objective.bounds)
    assert p[truth].mean() > 0.8 and p[~truth].mean() < 0.2
    assert ((p >= 0.5) == truth).mean() > 0.9
    # searches: the model's picks (not the space-filling round, not the exploration)
    text = f"kernel_cycles subject to max_preemption_latency_us <= {LATENCY_US}"
    cm = [run(CostModelStrategy(use_champion=False), 48, seed=s, objective=text)
          for s in range(3)]
    picks = [t for r in cm for t in r.trials if t.source == "model"]
    rnd = [t for s in range(3) for t in run(RandomStrategy(), 48, seed=s,
                                             objective=text).trials]
    share = sum(t.feasible for t in picks) / len(picks)
    # (constrained EI probes the bound's edge on purpose: not every model pick is feasible)
    assert share >= 0.6 and share > sum(t.feasible for t in rnd) / len(rnd) + 0.25


def test_transfer_prior_from_other_operators_ranks_a_new_space() -> None:
    """A prior fitted on measurements of *other* operators (dense, another conv) ranks this
    conv2d space better than chance, and a search started from it reaches the best
    faster than one without, on average over seeds."""
    import numpy as np

    from slicert_ops.search.model import TransferPrior

    def other(op: dict) -> tuple[list, dict]:
        raw = raw_manifest()
        raw["experiment"]["operator"] = op
        if op["type"] == "dense":
            raw["experiment"]["parameters"]["micro_tile"] = [1, 2, 4, 8]
        exp = validate(raw, "m.yaml")
        cs = expand(exp, VERSIONS).candidates
        return cs, {c.id: MeasureResult(c.id, "ok", fake_metrics(c)) for c in cs}

    _, cands = space()
    others = [other({"type": "dense", "input": [1, 256], "units": 64}),
              other({"type": "conv2d", "input": [1, 34, 34, 4], "kernel": [3, 3],
                     "out_channels": 8})]
    prior = TransferPrior.fit(cands, others, ["kernel_cycles"])
    pred = prior.predictions["kernel_cycles"]
    true = np.array([fake_metrics(c)["kernel_cycles"] for c in cands])
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = np.corrcoef(rank(pred), rank(true))[0, 1]
    assert rho > 0.5
    with_prior = [run(CostModelStrategy(use_champion=False, prior=prior), 16, seed=s)
                  for s in range(4)]
    assert [t.source for t in with_prior[0].trials[:4]] == ["champion"] * 4
    without = [run(CostModelStrategy(use_champion=False), 16, seed=s) for s in range(4)]
    assert sum(r.best.value for r in with_prior) <= sum(r.best.value for r in without)


def test_transfer_prior_scales_by_computed_macs_and_keeps_waste_costly(monkeypatch) -> None:
    """The prior learns cost per MAC *computed* (recomputed edge pixels count) and never
    predicts a candidate cheaper for more spilled values, even when the training data's
    noise points that way."""
    import dataclasses

    import numpy as np

    import slicert_ops.search.space as sp
    from slicert_ops.search.model import TransferPrior

    _, cands = space()
    extra: dict[str, dict[str, float]] = {}
    real_row = sp.feature_row
    monkeypatch.setattr(sp, "feature_row", lambda c: {**real_row(c), **extra[c.id]})
    train, table = cands[:60], {}
    rng = np.random.default_rng(0)
    for i, c in enumerate(train):
        waste, spill = 1.0 + (i % 3) * 0.25, float(i % 4)
        # noise of the wrong sign: more spill slightly cheaper in the training data
        cyc = 1000.0 * waste * (1 - 0.01 * spill) * (1 + 0.05 * rng.random())
        extra[c.id] = {"f_macs": 1000.0, "f_block_waste": waste, "f_block_spill": spill,
                       "f_loop_waste": 1.0}
        table[c.id] = MeasureResult(c.id, "ok", {"kernel_cycles": cyc})
    # one schedule three times: the probes differ in these features alone
    probe = [dataclasses.replace(cands[60], id=f"probe{k}") for k in range(3)]
    for k, c in enumerate(probe):
        extra[c.id] = {"f_macs": 1000.0, "f_block_waste": 2.0 if k == 1 else 1.0,
                       "f_block_spill": 3.0 if k == 2 else 0.0, "f_loop_waste": 1.0}
    pred = TransferPrior.fit(probe, [(train, table)], ["kernel_cycles"]) \
        .predictions["kernel_cycles"]
    assert pred[1] > 1.6 * pred[0]          # twice the MACs computed: about twice the cost
    assert pred[2] >= pred[0] * (1 - 1e-6)  # spill never makes it cheaper
    # layers without MACs (pooling, add) in the training data: their cost per window read
    for c in train[:20]:
        extra[c.id] = {**extra[c.id], "f_macs": 0.0, "f_window_reads": 500.0}
    for c in train[20:25]:
        extra[c.id] = {**extra[c.id], "f_macs": 0.0, "f_window_reads": 0.0}
    again = TransferPrior.fit(probe, [(train, table)], ["kernel_cycles"], relative=True)
    assert np.isfinite(again.predictions["kernel_cycles"]).all()


def test_grid_and_budget_larger_than_space() -> None:
    res = run(make_strategy("grid"), 10_000)
    _, cands = space()
    assert ids(res) == [c.id for c in cands] and res.budget == len(cands)


def test_constrained_objective_never_returns_a_violating_candidate() -> None:
    limit_us = LATENCY_US
    for strategy in (RandomStrategy(), CostModelStrategy(use_champion=False)):
        res = run(strategy, 48, objective=f"kernel_cycles subject to "
                                          f"max_preemption_latency_us <= {limit_us}")
        assert res.infeasible, "the bound must cut part of the space for this test"
        best = res.best
        assert best is not None and best.feasible
        assert best.metrics["max_preemption_latency_cycles"] <= limit_us * CYCLES_PER_US
        for n, v in res.curve():  # best-so-far only ever holds feasible values
            assert v is None or v in {t.value for t in res.trials[:n] if t.feasible}
        # an unconstrained search of the same trials would pick an infeasible one
        assert min(t.value for t in res.trials) < best.value
    # nothing feasible: no best, exit code 1
    none = run(RandomStrategy(), 12,
               objective="kernel_cycles subject to max_preemption_latency_cycles <= 1")
    assert none.best is None and none.exit_code == 1 and len(none.infeasible) == 12
    # the model learns the bound: most of its model picks are feasible (not all: the
    # constrained optimum lies on the bound, which constrained EI probes on purpose)
    cm = run(CostModelStrategy(use_champion=False), 48,
             objective=f"kernel_cycles subject to max_preemption_latency_us <= {limit_us}")
    picks = [t for t in cm.trials if t.source == "model"]
    assert sum(t.feasible for t in picks) >= 0.6 * len(picks)


class Interrupt(Exception):
    pass


class FolderMeasurer(Measurer):
    """Fake pipeline: writes complete run folders (the layout RunFolderDatabase reads) and
    can be 'killed' after n candidates."""

    def __init__(self, exp_dir: Path, stop_after: int | None = None) -> None:
        self.exp_dir, self.stop_after, self.count = exp_dir, stop_after, 0

    def measure(self, cands):
        out = []
        for c in cands:
            if self.stop_after is not None and self.count >= self.stop_after:
                raise Interrupt
            self.count += 1
            metrics = fake_metrics(c)
            w = RunWriter(self.exp_dir, run_number(c.index, 0, 1))
            for name in RUN_FILES:
                if name != "manifest.json":
                    w.write_text(name, dumps({"metrics": metrics}))
            w.publish({"candidate_id": c.id, "repeat": 0, "status": "ok"})
            out.append(MeasureResult(c.id, "ok", metrics, runs=(c.index + 1,)))
        return out


@pytest.mark.parametrize("strategy", ["random", "cost_model"])
def test_resume_after_interruption_replays_without_measuring_twice(tmp_path, strategy) -> None:
    def make():
        return CostModelStrategy(use_champion=False) if strategy == "cost_model" \
            else RandomStrategy()

    whole = run(make(), 30, seed=5)  # uninterrupted reference
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    first = FolderMeasurer(exp_dir, stop_after=13)
    with pytest.raises(Interrupt):
        run(make(), 30, seed=5, measurer=first, db=RunFolderDatabase(exp_dir, 1))
    assert len(list(exp_dir.glob("run_*"))) == 13
    second = FolderMeasurer(exp_dir)
    res = run(make(), 30, seed=5, measurer=second, db=RunFolderDatabase(exp_dir, 1))
    assert second.count == 17 and res.replayed == 13 and res.measured == 17
    assert ids(res) == ids(whole) and res.best.candidate_id == whole.best.candidate_id
    assert [t.reused for t in res.trials[:13]] == [True] * 13
    # the trial log was rewritten by the resumed session: one line per trial
    lines = (exp_dir / "search" / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 30 and json.loads(lines[0])["reused"] is True
    # a third run measures nothing
    third = FolderMeasurer(exp_dir)
    again = run(make(), 30, seed=5, measurer=third, db=RunFolderDatabase(exp_dir, 1))
    assert third.count == 0 and again.replayed == 30 and ids(again) == ids(whole)


# -- real pipeline ------------------------------------------------------------------------
TINY = """experiment:
  name: {name}
  operator: {{type: conv2d, input: [1, 10, 10, 2], kernel: [3, 3], out_channels: 4}}
  parameters:
    tile_size: [2, 4, 8]
    micro_tile: [1, 2]
    unroll: [1, 2, 4]
    slice: [64]
  runner: {{simulate_irq_load: true, irq_period_us: 60, irq_jitter_us: 10}}
  search:
    strategy: {strategy}
    budget: {budget}
    objective: {objective}
"""


@pytest.mark.integration
def test_real_search_via_cli_then_resume(tmp_path, capsys) -> None:
    from slicert_ops.cli import main

    manifest = tmp_path / "tiny.yaml"
    manifest.write_text(TINY.format(name="tiny_search", strategy="cost_model", budget=5,
                                    objective="kernel_cycles subject to "
                                              "max_preemption_latency_us <= 25"))
    out = tmp_path / "results"
    rc = main(["run", str(manifest), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    exp_dir = out / "tiny_search"
    summary = json.loads((exp_dir / "search" / "summary.json").read_text())
    assert summary["trials"] == 5 and summary["measured"] == 5 and summary["replayed"] == 0
    assert (exp_dir / "search" / "curve.png").stat().st_size > 1000
    assert "best: kernel_cycles" in text and "trials" in text
    assert rc == summary["failed"] and rc == 0
    best = summary["best"]
    assert best["feasible"] and best["metrics"]["max_preemption_latency_cycles"] <= 25 * 50
    run_dirs = sorted(exp_dir.glob("run_[0-9]*"))
    assert len(run_dirs) == 5
    exp = load_manifest(manifest)
    cands = {c.id: c for c in expand(exp).candidates}
    for d in run_dirs:  # numbered as in a grid sweep of the same manifest
        man = json.loads((d / "manifest.json").read_text())
        assert d.name == run_name(cands[man["candidate_id"]].index + 1)
    # interrupted: the last run folder is lost; the re-run replays 4 and measures 1
    last = max(run_dirs, key=lambda d: d.stat().st_mtime_ns)
    shutil.rmtree(last)
    rc = main(["run", str(manifest), "--out", str(out), "--no-progress"])
    again = json.loads((exp_dir / "search" / "summary.json").read_text())
    assert rc == 0 and again["measured"] == 1 and again["replayed"] == 4
    assert again["best"]["candidate_id"] == best["candidate_id"]
    assert [c[1] for c in again["curve"]] == [c[1] for c in summary["curve"]]


@pytest.mark.integration
def test_meta_schedule_with_our_builder_and_runner(tmp_path) -> None:
    from slicert_ops.search.meta_schedule import run_meta_schedule

    manifest = tmp_path / "ms.yaml"
    manifest.write_text(TINY.format(name="ms_search", strategy="meta_schedule", budget=4,
                                    objective="kernel_cycles"))
    exp = load_manifest(manifest)
    res = run_meta_schedule(exp, tmp_path / "results", jobs=2, progress=False)
    assert len(res.trials) == 4 and res.measured == 4
    ok = [t for t in res.trials if t.status == "ok"]
    assert ok and res.best is not None
    for t in ok:
        assert t.metrics["correct"] == 1
        # the yield check runs once per micro-tile of the TVM-generated schedule
        assert t.metrics["yield_checks"] == t.schedule["yield_checks"]
        run_dir = tmp_path / "results" / "ms_search" / run_name(t.runs[0])
        tvm_config = json.loads((run_dir / "tvm_config.json").read_text())
        assert tvm_config["micro_tile"]["yield_checks"] == t.schedule["yield_checks"]
        assert all((run_dir / f).is_file() for f in RUN_FILES)
    traces = [json.loads(line) for line in (tmp_path / "results" / "ms_search" / "search" /
              "meta_schedule_traces.jsonl").read_text().splitlines()]
    assert {t["candidate_id"] for t in traces} == {t.candidate_id for t in ok}
    assert all("sample_perfect_tile" in t["trace"] for t in traces)
    # seeded: a re-run proposes the same schedules and replays them from the run folders
    again = run_meta_schedule(exp, tmp_path / "results", jobs=2, progress=False)
    assert [t.candidate_id for t in again.trials] == [t.candidate_id for t in res.trials]
    assert again.measured == len(res.failed) and again.best.value == res.best.value


@pytest.mark.integration
def test_meta_schedule_space_rules_predict_what_lowers() -> None:
    """The stack-limit postproc's estimate agrees with the C lowering (which refuses kernels
    needing the TVM allocator), and every lowered kernel calls the yield check."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from slicert_ops.codegen.operators import define
    from slicert_ops.codegen.spec import OperatorSpec
    from slicert_ops.search import meta_schedule as slms

    op = OperatorSpec("conv2d", "int8", (1, 20, 20, 4), kernel=(3, 3), out_channels=8)
    seen = {True: 0, False: 0}
    with slms._without_tensor_intrinsics():
        for seed in range(1, 9):
            ctx = ms.TuneContext(mod=define(op), target=tvm.target.Target(slms.MS_TARGET),
                                 space_generator=slms.space_generator(), task_name="main",
                                 rand_state=seed, num_threads=1).clone()
            for sch in ctx.generate_design_space():
                fits = slms.write_cache_bytes(sch.mod) < slms.STACK_ALLOC_LIMIT
                try:
                    kernel, yl = slms.kernel_from_schedule(op, sch)
                except RuntimeError as exc:
                    assert not fits and "TVMBackendAllocWorkspace" in str(exc)
                    seen[False] += 1
                    continue
                assert fits and "slicert_yield_check()" in kernel.c_source
                assert yl.checks >= 1 and yl.outputs >= 1
                seen[True] += 1
    assert seen[True] and seen[False]
