"""`slicert timeline` on a real run folder (TVM, gcc, QEMU + cycle plugin under IRQ load):
the Chrome trace JSON against the trace it comes from, the HTML timeline in headless
Chromium (offline), the report's links and the files tracking uploads with a run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "slicert_ops.cli"]
CHROMIUM = Path("/usr/bin/chromium")

MANIFEST = """experiment:
  name: tiny_timeline
  repeat: 1
  operator: {type: conv2d, input: [1, 18, 18, 3], kernel: [3, 3], out_channels: 8}
  parameters: {tile_size: [8], micro_tile: [2], unroll: [4], slice: [24]}
  runner: {simulate_irq_load: true, irq_period_us: 60, irq_jitter_us: 10, rt_work_iters: 20,
           rt_deadline_us: 80}
"""


def slicert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("timeline")
    (base / "m.yaml").write_text(MANIFEST)
    res = slicert("run", str(base / "m.yaml"), "--out", str(base / "res"), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = sorted((base / "res" / "tiny_timeline").glob("run_[0-9]*"))
    return run


@pytest.fixture(scope="module")
def timeline(run_dir: Path) -> tuple[dict, dict]:
    res = slicert("timeline", str(run_dir))
    assert res.returncode == 0, res.stderr
    assert (run_dir / "timeline.html").is_file()
    return (json.loads((run_dir / "timeline.json").read_text()),
            json.loads((run_dir / "qemu_trace.json").read_text()))


def expected_slices(trace: dict, tvm_config: dict) -> Counter:
    """Slices the trace holds, counted from its raw events (one per enter/exit pair)."""
    types = Counter(e["type"] for e in trace["events"])
    return Counter({"kernel": 1, "calibration": types["cal_end"],
                    "micro_tile": trace["metrics"]["yield_checks"],
                    "tile": tvm_config["features"]["macro_tiles"],
                    "pendsv": types["pendsv_exit"], "isr": types["irq_exit"],
                    "tick": types["tick_exit"], "rt_job": types["rt_end"]})


def test_chrome_trace_json_follows_the_trace(timeline: tuple[dict, dict],
                                             run_dir: Path) -> None:
    doc, trace = timeline
    m, mhz = trace["metrics"], trace["cpu_mhz"]
    evs = doc["traceEvents"]
    assert doc["displayTimeUnit"] in ("ms", "ns")
    names = {e["tid"]: e["args"]["name"] for e in evs
             if e["ph"] == "M" and e["name"] == "thread_name"}
    slices = [e for e in evs if e["ph"] == "X"]
    assert {e["tid"] for e in evs if e["ph"] in "Xi"} <= set(names)  # every track named
    for e in slices:
        assert e["dur"] >= 0 and e["ts"] >= 0
        assert e["ts"] == pytest.approx(e["args"]["start_cycles"] / mhz, abs=1e-3)
        assert e["dur"] == pytest.approx(e["args"]["cycles"] / mhz, abs=1e-3)
    tvm = json.loads((run_dir / "tvm_config.json").read_text())
    assert Counter(e["cat"] for e in slices) == expected_slices(trace, tvm)
    inst = Counter(e["cat"] for e in evs if e["ph"] == "i")
    assert inst["yield"] == m["yield_checks"] > 0
    assert inst["deadline_miss"] == m["deadline_misses"]
    assert inst["irq_assert"] >= m["irq_count"] > 0
    assert inst["slice_expire"] == m["slices"]
    assert inst["preempt"] == sum(e["type"] == "yield" for e in trace["events"])
    counters = {e["name"] for e in evs if e["ph"] == "C"}
    assert {"slices expired", "slice budget left"} <= counters
    # slices on one track nest (what Perfetto and chrome://tracing need)
    for tid in names:
        open_ends: list[int] = []
        for e in sorted((x for x in slices if x["tid"] == tid),
                        key=lambda x: (x["args"]["start_cycles"], -x["args"]["cycles"])):
            start = e["args"]["start_cycles"]
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            end = start + e["args"]["cycles"]
            assert not open_ends or end <= open_ends[-1], (names[tid], e["name"])
            open_ends.append(end)
    kernel = next(e for e in slices if e["cat"] == "kernel")
    assert kernel["args"]["cycles"] == m["wall_cycles"]


def test_output_option_puts_the_html_next_to_the_json(run_dir: Path, tmp_path: Path) -> None:
    res = slicert("timeline", str(run_dir), "-o", str(tmp_path / "t" / "x.json"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "t" / "x.json").is_file() and (tmp_path / "t" / "x.html").is_file()
    res = slicert("timeline", str(tmp_path))
    assert res.returncode == 2 and "qemu_trace.json" in res.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_html_timeline_in_headless_chromium(timeline: tuple[dict, dict], run_dir: Path,
                                            tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from slicert_ops.report.timeline_view import offline_only

    doc, trace = timeline
    tvm = json.loads((run_dir / "tvm_config.json").read_text())
    want = sum(expected_slices(trace, tvm).values())
    blocked: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 600})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        offline_only(page, blocked)
        page.goto((run_dir / "timeline.html").as_uri())
        page.wait_for_function("window.slicertTimeline !== undefined")
        api = "window.slicertTimeline"
        assert int(page.get_attribute("body", "data-slices")) == want
        assert page.evaluate(f"{api}.frame.represented") == want  # whole run: all drawn
        tracks = page.evaluate(f"{api}.tracks")
        assert [t["name"] for t in tracks] == ["kernel thread", "PendSV",
                                               "timer ISR (IRQ load)", "RT task",
                                               "SysTick (slice timer)"]
        assert page.evaluate(f"{api}.instants") == sum(e["ph"] == "i"
                                                       for e in doc["traceEvents"])
        span0 = page.evaluate(f"{api}.view.t1 - {api}.view.t0")
        page.click("#zin")
        page.click("#zin")
        assert page.evaluate(f"{api}.view.t1 - {api}.view.t0") == pytest.approx(span0 / 4)
        shown = page.evaluate(f"{api}.frame.represented")
        assert 0 < shown < want
        assert int(page.get_attribute("body", "data-visible-slices")) == shown
        box = page.locator("canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 60)
        page.mouse.wheel(0, -600)  # zoom in around the pointer
        page.wait_for_timeout(100)
        assert page.evaluate(f"{api}.view.t1 - {api}.view.t0") < span0 / 4
        page.click("#reset")
        assert page.evaluate(f"{api}.frame.represented") == want
        browser.close()
    assert not errors and not blocked
    # the screenshot script (docs/timeline.png is made with it)
    png = tmp_path / "t.png"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "timeline_screenshot.py"),
                          str(run_dir / "timeline.html"), str(png), "--zoom", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["slices"] == want and not info["blocked_requests"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_links_timelines_and_tracking_uploads_them(run_dir: Path,
                                                          tmp_path: Path) -> None:
    from slicert_ops.tracking.artifacts import run_files

    report = run_dir.parent / "report"
    html = (report / "summary.html").read_text()
    links = sorted(report.glob("timelines/run_*.html"))
    assert links and all(f"timelines/{p.name}" in html for p in links)
    assert all(p.with_suffix(".json").is_file() for p in links)
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("timeline.*"))
    names = {p.name for p, _ in run_files(copy)}
    assert {"timeline.json", "timeline.html", "qemu_trace.json"} <= names


def test_report_timelines_are_rewritten_only_when_their_run_changes(run_dir: Path,
                                                                     tmp_path: Path,
                                                                     monkeypatch) -> None:
    """A warm report keeps a timeline whose run files and code are unchanged (the key beside
    it), writes it again when the run's trace changes, and drops timelines of runs no
    longer among the best."""
    import pandas as pd

    from slicert_ops.report import timeline as tl

    run = shutil.copytree(run_dir, tmp_path / "res" / run_dir.name)
    man = json.loads((run / "manifest.json").read_text())
    runs = pd.DataFrame([{"candidate_id": man["candidate_id"], "run": run.name,
                          "run_dir": str(run), "valid": True,
                          "max_preemption_latency_cycles": 1.0}])
    ranking = runs[["candidate_id"]]
    out = tmp_path / "report"
    (out / "timelines").mkdir(parents=True)
    stale = out / "timelines" / "run_9999.html"
    stale.write_text("old")
    written: list[Path] = []
    real = tl.write_timeline
    monkeypatch.setattr(tl, "write_timeline",
                        lambda d, o=None: written.append(d) or real(d, o))
    (first,) = tl.report_timelines(runs, [ranking], out)
    assert len(written) == 1 and not stale.exists()
    html = first[1].read_text()
    assert tl.report_timelines(runs, [ranking], out)[0][1] == first[1]
    assert len(written) == 1 and first[1].read_text() == html   # warm: nothing written
    trace = json.loads((run / "qemu_trace.json").read_text())
    trace["events"] = trace["events"][: len(trace["events"]) // 2]
    (run / "qemu_trace.json").write_text(json.dumps(trace))
    tl.report_timelines(runs, [ranking], out)
    assert len(written) == 2 and first[1].read_text() != html
