"""The report's plot cache (report/plots.py): a PNG is re-drawn only when what it plots
changed, matplotlib is imported only to draw, and the summaries equal a full rebuild's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.synthetic_runs import write_sweep

from slicert_ops.report import plots
from slicert_ops.report.index import build_index
from slicert_ops.report.report import write_report
from slicert_ops.tracking.artifacts import report_files

EXP = "plot_cache"
STAMP = re.compile(rb"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_sweep(root, EXP, tile_sizes=(8, 16), micro_tiles=(1, 2), unrolls=(1, 4),
                slices=(32, 64), repeat=2, validation=lambda c, r: True,
                prediction_version="1")
    return root


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): STAMP.sub(b"Generated <stamp>", p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def drawn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = plots._mpl

    def spy():
        calls.append(1)
        return real()

    monkeypatch.setattr(plots, "_mpl", spy)
    return calls


def test_warm_report_draws_nothing_and_equals_a_full_rebuild(results, tmp_path, monkeypatch):
    df = build_index(results, experiment=EXP)
    out = results / EXP / "report"
    write_report(df, out, EXP)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 7 and all((out / f".{n}.key").is_file() for n in pngs)
    calls = drawn(monkeypatch)
    write_report(df, out, EXP)
    assert calls == []
    fresh = tmp_path / "fresh"
    write_report(df, fresh, EXP)  # a full rebuild elsewhere
    assert len(calls) == len(pngs)
    assert files(out) == files(fresh)
    # the content keys are not report artifacts
    assert not any(p.name.startswith(".") for p, _ in report_files(out))


def test_changed_data_redraws_the_plots_that_show_it(results, monkeypatch):
    out = results / EXP / "report"
    write_report(build_index(results, experiment=EXP), out, EXP)
    keys = {p.name: p.read_text() for p in out.glob(".*.key")}
    run = results / EXP / "run_0001"  # its candidate (unroll 1) loses a repeat's cycles
    trace = json.loads((run / "qemu_trace.json").read_text())
    trace["metrics"]["kernel_cycles"] += 12345
    trace["metrics"]["irq_latency_max_cycles"] += 7
    (run / "qemu_trace.json").write_text(json.dumps(trace))
    calls = drawn(monkeypatch)
    write_report(build_index(results, experiment=EXP), out, EXP)
    assert len(calls) == len(keys) == 7  # every plot shows kernel cycles or IRQ latency of that run
    new = {p.name: p.read_text() for p in out.glob(".*.key")}
    assert set(new) == set(keys) and all(new[k] != keys[k] for k in keys)
    calls.clear()
    # a change no plot shows (a host timing): the plots of candidates are kept
    man = json.loads((run / "manifest.json").read_text())
    man["host_timings_s"]["run"] = 1.25
    (run / "manifest.json").write_text(json.dumps(man))
    write_report(build_index(results, experiment=EXP), out, EXP)
    assert len(calls) == 2  # only the plots handed every run (IRQ, prediction) see it


def test_a_missing_png_is_redrawn(results, monkeypatch):
    out = results / EXP / "report"
    df = build_index(results, experiment=EXP)
    write_report(df, out, EXP)
    (out / "pareto_kernel_vs_preemption.png").unlink()
    calls = drawn(monkeypatch)
    write_report(df, out, EXP)
    assert len(calls) == 1 and (out / "pareto_kernel_vs_preemption.png").is_file()


def test_matplotlib_is_imported_only_to_draw():
    code = ("import sys, slicert_ops.report.report, slicert_ops.report.plots; "
            "print('matplotlib' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "False"


def test_network_plots_are_cached_and_keyed_by_their_own_module(tmp_path, monkeypatch):
    """The network report's plots use the same cache: drawn once for the same rows, again
    when the rows change; their key covers network/report.py's code as well as plots.py's."""
    import pandas as pd

    from slicert_ops.network import report as net_report

    rows = pd.DataFrame({"op": [0, 1], "layer": ["conv1", "fc"], "type": ["conv2d", "dense"],
                         "kernel_cycles": [1000, 200],
                         "max_preemption_latency_cycles": [300, 80]})
    calls = []
    real = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, path: calls.append(path) or real(fig, path))
    path = tmp_path / "layers.png"
    net_report.plot_layers(rows, path, "t")
    net_report.plot_layers(rows, path, "t")
    assert len(calls) == 1
    net_report.plot_layers(rows.assign(kernel_cycles=[1000, 250]), path, "t")
    assert len(calls) == 2
    key = plots.content_key("plot_layers", {"rows": rows, "title": "t"},
                            net_report.__file__)
    assert key != plots.content_key("plot_layers", {"rows": rows, "title": "t"})
