"""One-sentence answers (slicert_ops/report/answers.py): unit tests on index frames, and one
real tiny sweep whose deadline no candidate can meet (`slicert run` output, summary.html)."""

from __future__ import annotations

import html
import subprocess
import sys
from itertools import product
from pathlib import Path

import pandas as pd
import pytest

from slicert_ops.report.answers import (
    NO_EFFECT,
    answers,
    bound_answers,
    deadline_answer,
    no_effect_answers,
    parameter_spread,
)
from slicert_ops.search.objective import parse_objective

MHZ = 50
PIXEL_MACS = 600          # MACs per output pixel (8 channels x 5x5x3)
OUT_PIXELS = 1024


def frame(*, micro: int = 4, tiles=(8, 16), unrolls=(1, 4), slices=(32, 64),
          cycles_per_mac=lambda u, s: 7.0 / u ** 0.5, misses=lambda u, s: 400,
          deadline_us: float = 200, releases: int = 500, conv: bool = True) -> pd.DataFrame:
    """An index-like frame: one valid run per candidate of the grid; kernel cycles are
    cycles_per_mac x MACs (so the granule is cycles_per_mac x MACs per micro-tile), 5 %
    more per later tile size."""
    rows = []
    macs = PIXEL_MACS * OUT_PIXELS
    micro_macs = PIXEL_MACS * (micro * micro if conv else micro)
    for i, (t, u, s) in enumerate(product(tiles, unrolls, slices)):
        cpm = cycles_per_mac(u, s)
        rows.append({"experiment": "x", "run": f"run_{i + 1:04d}", "candidate_id": f"c{i}",
                     "valid": True, "schedule.tile_size": t, "schedule.micro_tile": micro,
                     "schedule.unroll": u, "schedule.slice": s,
                     "kernel_cycles": cpm * macs * (1 + 0.05 * tiles.index(t)),
                     "deadline_misses": misses(u, s),
                     "rt_releases": releases, "yield_checks": macs // micro_macs,
                     "max_preemption_latency_cycles": cpm * micro_macs * 1.05,
                     "f_macs": macs, "f_macs_per_micro_tile": micro_macs,
                     "f_op_conv2d": int(conv), "runner.rt_deadline_us": deadline_us,
                     "runner.cpu_mhz": MHZ, "runner.rt_work_iters": 200})
    return pd.DataFrame(rows)


def test_impossible_deadline_names_cause_and_fix() -> None:
    df = frame()
    text = deadline_answer(df)
    assert text is not None and text.startswith("No candidate meets the RT deadline")
    best_cpm = min(7.0 / u ** 0.5 for u in (1, 4))
    granule = best_cpm * PIXEL_MACS * 16
    deadline = 200 * MHZ
    assert f"{int(df['deadline_misses'].sum()):,} deadline misses" in text
    assert f"{deadline:,} cycles" in text and "200 µs" in text
    assert f"~{granule:,.0f} cycles = {granule / MHZ:,.0f} µs" in text
    assert f"{granule / deadline:.1f}x the deadline" in text
    # micro_tile m: granule x (m/4)^2; only m = 1 fits under the deadline here
    fits = [m for m in (1, 2, 3) if granule * (m / 4) ** 2 <= deadline and 8 % m == 0]
    assert fits and 3 not in fits
    assert f"Fix: micro_tile {fits[0]} (~{granule * (fits[0] / 4) ** 2:,.0f} cycles" in text
    for m in fits:
        assert f"{m} (~{granule * (m / 4) ** 2:,.0f} cycles = " in text
    assert answers(df)[0] == text


def test_dense_granule_scales_linearly_and_none_fits() -> None:
    df = frame(conv=False, micro=4, deadline_us=10)
    text = deadline_answer(df)
    granule = min(7.0 / u ** 0.5 for u in (1, 4)) * PIXEL_MACS * 4
    one = granule / 4  # dense: m outputs per micro-tile
    assert one > 10 * MHZ
    assert f"even micro_tile = 1 takes ~{one:,.0f} cycles" in text
    assert "raise rt_deadline_us" in text


def test_no_answer_when_a_candidate_meets_the_deadline_or_no_irq_load() -> None:
    assert deadline_answer(frame(misses=lambda u, s: 0 if u == 4 else 3)) is None
    assert deadline_answer(frame(releases=0, misses=lambda u, s: 0)) is None
    invalid = frame()
    invalid["valid"] = False
    assert answers(invalid) == []


def test_slice_without_effect_is_said_and_unroll_is_not() -> None:
    df = frame(cycles_per_mac=lambda u, s: 7.0 / u * (1 + 0.004 * (s == 32)))
    spread = parameter_spread(df, "schedule.slice")
    assert spread is not None and spread < NO_EFFECT
    said = no_effect_answers(df)
    assert len(said) == 1 and said[0].startswith("slice has no measurable effect")
    assert f"< {max(0.1, -(-spread * 1000 // 1) / 10):g} %" in said[0]
    assert "outlasts every slice" in said[0]  # 7 x 9600 cycles >> 64 µs x 50
    big = frame(cycles_per_mac=lambda u, s: 7.0 / u * (1 + 0.2 * (s == 32)))
    assert no_effect_answers(big) == []


def test_objective_bound_nobody_meets() -> None:
    df = frame()
    limit_us = 100
    obj = parse_objective(f"kernel_cycles subject to max_preemption_latency_us <= {limit_us}",
                          MHZ)
    (text,) = bound_answers(df, obj)
    best = df["max_preemption_latency_cycles"].min()
    assert text.startswith("No candidate meets the objective's bound")
    assert f"has {best:,.0f} cycles" in text
    granule = min(7.0 / u ** 0.5 for u in (1, 4)) * PIXEL_MACS * 16
    assert granule / 16 <= limit_us * MHZ < granule / 4  # so only micro_tile 1 fits
    assert "Fix: micro_tile 1 (" in text and " 2 (" not in text
    tight = parse_objective("kernel_cycles subject to max_preemption_latency_us <= 20", MHZ)
    assert "relax the bound to at least" in bound_answers(df, tight)[0]
    loose = parse_objective("kernel_cycles subject to max_preemption_latency_us <= 5000", MHZ)
    assert bound_answers(df, loose) == []
    assert bound_answers(df, None) == []


MANIFEST = """experiment:
  name: tiny_deadline
  repeat: 1
  operator: {type: conv2d, input: [1, 18, 18, 3], kernel: [3, 3], out_channels: 8}
  parameters: {tile_size: [8], micro_tile: [4], unroll: [4], slice: [32]}
  runner: {simulate_irq_load: true, irq_period_us: 60, irq_jitter_us: 10, rt_work_iters: 20,
           rt_deadline_us: 40}
"""


@pytest.mark.integration
def test_run_says_the_deadline_is_impossible(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    res = subprocess.run([sys.executable, "-m", "slicert_ops.cli", "run",
                          str(tmp_path / "m.yaml"), "--out", str(tmp_path / "res"),
                          "--no-progress"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    exp_dir = tmp_path / "res" / "tiny_deadline"
    index = pd.read_parquet(exp_dir / "index.parquet")
    assert (index["deadline_misses"] > 0).all()
    text = deadline_answer(index)
    assert text is not None
    lines = [line for line in res.stdout.splitlines() if line.startswith("answer:")]
    assert any(text in line for line in lines), res.stdout
    assert "Fix: micro_tile 1 " in text  # 1 pixel per granule fits 40 µs on this operator
    page = (exp_dir / "report" / "summary.html").read_text()
    assert html.escape(text) in page
    assert text in (exp_dir / "report" / "summary.md").read_text()


def test_parameter_spread_equals_its_definition_on_random_sweeps() -> None:
    """The one-pass spread equals the definition (per group of the other parameters, the
    spread of the per-value means), with missing values, single-value groups and a
    parameter that is absent in some rows."""
    import numpy as np
    import pandas as pd

    def by_definition(cand: pd.DataFrame, param: str) -> float | None:
        others = [c for c in cand.columns if c.startswith("schedule.") and c != param
                  and cand[c].notna().any()]
        spreads = []
        for _, g in cand.groupby(others, dropna=False) if others else [((), cand)]:
            vals = g.groupby(param)["kernel_cycles"].mean().dropna()
            if len(vals) >= 2 and vals.mean() > 0:
                spreads.append(float((vals.max() - vals.min()) / vals.mean()))
        return max(spreads) if spreads else None

    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        cand = pd.DataFrame({
            "schedule.tile_size": rng.choice([4, 8, 16], n).astype(float),
            "schedule.unroll": rng.choice([1, 2], n).astype(float),
            "schedule.form": np.where(rng.random(n) < 0.3, np.nan, rng.choice([0, 1], n)),
            "kernel_cycles": np.where(rng.random(n) < 0.1, np.nan,
                                      rng.integers(1000, 5000, n).astype(float))})
        for p in ("schedule.tile_size", "schedule.unroll", "schedule.form"):
            want, got = by_definition(cand, p), parameter_spread(cand, p)
            assert (want is None) == (got is None), (trial, p)
            if want is not None:
                assert abs(got - want) < 1e-12, (trial, p, got, want)
