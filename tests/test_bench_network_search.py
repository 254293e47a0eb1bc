"""bench/bench_network_search.py's pure logic: budgets per task space, the kernel form of a
schedule, and the oracle replay of the library's strategies on a synthetic table of a real
network's task candidates (DS-CNN's manifest, no measurement)."""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from slicert_ops.manifest import expand, load_manifest
from slicert_ops.search.base import MeasureResult
from slicert_ops.search.objective import parse_objective
from slicert_ops.search.strategies import CostModelStrategy, RandomStrategy

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    """The bench script as a module (bench/ is not a package; registered for dataclasses)."""
    if "bench_network_search" in sys.modules:
        return sys.modules["bench_network_search"]
    spec = importlib.util.spec_from_file_location("bench_network_search",
                                                  ROOT / "bench" / "bench_network_search.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_network_search"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("slicert.search").setLevel(logging.ERROR)


def test_budgets_round_up_without_float_noise() -> None:
    b = _bench()
    assert b.budgets_of(8) == [1, 1, 2]      # 0.4, 0.8, 1.6
    assert b.budgets_of(9) == [1, 1, 2]
    assert b.budgets_of(15) == [1, 2, 3]     # 0.2 x 15 = 3.0000000000000004: 3, not 4
    assert b.budgets_of(20) == [1, 2, 4]
    assert b.budgets_of(49) == [3, 5, 10]
    assert b.budgets_of(1) == [1, 1, 1]


def test_form_names() -> None:
    b = _bench()
    assert [b.form_of({"form": f}) for f in (0, 1, 2, 3)] == \
        ["direct", "block", "im2col", "pointwise"]
    assert b.form_of({"micro_tile": 4}) == "-"


def _synthetic_tasks() -> list:
    """DS-CNN's task candidates with made-up cycles: a per-form cost per MAC, cheaper with
    bigger register blocks."""
    b = _bench()
    exp = load_manifest(ROOT / "experiments" / "networks" / "kws_ds_cnn.yaml")
    by_task: dict[str, list] = {}
    for c in expand(exp).candidates:
        if c.operator["type"] == "network_task":
            by_task.setdefault(c.operator["task"], []).append(c)
    out = []
    for key, cands in by_task.items():
        table = {}
        for c in cands:
            s = c.schedule
            cyc = 1e5 * (1 + 0.3 * (s.get("form") == 1) - 0.1 * (s.get("form") == 3)) / math.sqrt(
                (s.get("pixel_block") or 1) * (s.get("unroll") or 1)) + 7 * s.get("micro_tile", 1)
            table[c.id] = MeasureResult(c.id, "ok", {"kernel_cycles": cyc})
        op = cands[0].operator
        out.append(b.TaskSpace("net_ds_cnn_kws", op["fingerprint"], key, op["layers"],
                               op["op_type"], op["weight"], cands, table))
    return out


def test_replay_on_a_synthetic_table() -> None:
    b = _bench()
    tasks = _synthetic_tasks()
    pw = next(t for t in tasks if t.layers[0] == "pw1")
    dw = next(t for t in tasks if t.layers[0] == "dw1")
    n = len(pw.cands)
    # a search of the whole space finds the true best
    res = b.replay(pw, RandomStrategy(), n, 0, parse_objective("kernel_cycles"))
    assert len(res.trials) == n and res.best_at(n) == pw.true_best()
    assert pw.best_forms() == {"pointwise"}
    # every strategy, read at each budget; a prior from another task's table
    prior = b.transfer_prior(pw, [dw])
    strategies = {"random": RandomStrategy,
                  "cost_model": lambda: CostModelStrategy(use_champion=False),
                  "cost_model+prior": lambda: CostModelStrategy(use_champion=False,
                                                                prior=prior)}
    out = b.evaluate(pw, strategies, seeds=2)
    assert out["budgets"] == b.budgets_of(n)
    for cells in out["rows"].values():
        assert [len(c.ratios) for c in cells] == [2, 2, 2]
        assert all(r >= 1.0 for c in cells for r in c.ratios)
        # more budget never finds worse
        assert all(x.mean >= y.mean for x, y in zip(cells, cells[1:], strict=False))
    lines = b.summary("net_ds_cnn_kws", [out], list(strategies))
    assert len(lines) == 3 and "worst seed at 10 %" in lines[1]
    assert "tuned cycles / best" in lines[0]


def test_missing_or_empty_results_folder_says_how_to_fill_it(tmp_path: Path) -> None:
    b = _bench()
    with pytest.raises(SystemExit, match="no such results folder.*bench_kernels.py"):
        b.load_tasks(tmp_path / "nope")
    with pytest.raises(SystemExit, match="no runs.*bench_kernels.py --out"):
        b.load_tasks(tmp_path)
