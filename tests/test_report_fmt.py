"""Report tables keep the end-of-run summary's precision: three significant digits for
ratios (MACs per cycle 0.105 vs 0.052, not both "0.1"), whole cycles for cycles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from slicert_ops.report.fmt import cell, number
from slicert_ops.report.report import write_report

EXP = "tiny_net"


def test_number_and_cell() -> None:
    assert [number(v) for v in (0.105, 0.052, 0.0834, 1.5, 12.34, 99.4, 123.4, 12345.6,
                                2.0)] == ["0.105", "0.052", "0.0834", "1.5", "12.3", "99.4",
                                          "123", "12,346", "2"]
    assert [cell(v) for v in (None, float("nan"), True, np.bool_(False), 1234, np.int64(7),
                              np.float64(0.052), "conv")] == ["", "", "yes", "no", "1,234",
                                                             "7", "0.052", "conv"]


def _network_results(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two repeats of one network candidate with three layers (index rows + layer rows)."""
    exp_dir = root / EXP
    rows = []
    for rep in range(2):
        run_dir = exp_dir / f"run_{rep:04d}"
        run_dir.mkdir(parents=True)
        (run_dir / "manifest.json").write_text(json.dumps({
            "operator": {"type": "network"}, "status": "ok", "candidate_id": "net0",
            "repeat": rep, "network": {"schedules": "default"}}))
        rows.append({"experiment": EXP, "run": run_dir.name, "run_dir": str(run_dir),
                     "candidate_id": "net0", "operator.type": "network", "status": "ok",
                     "correct": 1, "valid": True, "schedule.slice": 64,
                     "network_cycles": 40000.0 + rep * 1.2, "kernel_cycles": 12345.0 + rep,
                     "macs_per_cycle": 0.0834, "max_preemption_latency_cycles": 900 + rep,
                     "deadline_misses": 0, "rt_jobs": 3})
    layers = pd.DataFrame([
        {"run": "run_0000", "candidate_id": "net0", "repeat": 0, "op": i, "layer": name,
         "type": kind, "kernel_cycles": cyc, "macs_per_cycle": mpc, "yield_checks": 10,
         "max_granule_cycles": 300, "max_preemption_latency_cycles": 400 + i}
        for i, (name, kind, cyc, mpc) in enumerate([("conv1", "conv2d", 5000, 0.105),
                                                     ("conv2", "conv2d", 6000, 0.052),
                                                     ("fc", "dense", 1345, 1.5)])])
    return pd.DataFrame(rows), layers


def test_network_report_tables_keep_three_significant_digits(tmp_path: Path) -> None:
    index, layers = _network_results(tmp_path / "results")
    out = tmp_path / "report"
    write_report(index, out, EXP, layers=layers)
    md = (out / "summary.md").read_text()
    html = (out / "summary.html").read_text()
    for text, cells in ((md, lambda t: [c.strip() for c in re.findall(r"\|([^|\n]*)", t)]),
                        (html, lambda t: re.findall(r"<td>([^<]*)</td>", t))):
        found = cells(text)
        for want in ("0.105", "0.052", "1.5", "0.0834", "12,346", "40,001"):
            assert want in found, (want, found)
        assert "0.1" not in found
