"""A run's events as a timeline: Chrome trace-event JSON (Perfetto, chrome://tracing) and a
self-contained zoomable HTML page (``timeline_view``) drawing the same events.

    json_path, html_path = write_timeline(Path("results/exp/run_0001"))

One track (``tid``) per context: the kernel thread (kernel, layers, tiles, micro-tiles,
calibration), PendSV, the IRQ-load timer ISR, the RT task and SysTick. ``ph: X`` slices,
``ph: i`` instants (yield checks, yields, IRQ assertions, RT releases, slice expiries,
deadline misses), ``ph: C`` counters (slices expired, slice budget left), ``ph: M`` track
names. ``ts``/``dur`` are µs of the modelled clock (cycles / ``cpu_mhz``); every event's
``args`` carry its cycles. Pairs and counts follow ``sim.trace.compute_metrics``: the yield
check instants in the kernel window are ``yield_checks``, its deadline-miss instants
``deadline_misses``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slicert_ops.rundir import key_is_current, key_path, write_key, write_text_atomic
from slicert_ops.sim import events as ev
from slicert_ops.sim.trace import Event, as_event

SCHEMA = "slicert-timeline/1"
PID = 1
#: tid -> track name (the viewer draws them in this order)
TRACKS: dict[int, str] = {1: "kernel thread", 2: "PendSV", 3: "timer ISR (IRQ load)",
                          4: "RT task", 5: "SysTick (slice timer)"}
KERNEL, PENDSV, ISR, RT, TICK = TRACKS
JSON_NAME, HTML_NAME = "timeline.json", "timeline.html"
_REASONS = {ev.YIELD_REASON_SLICE: "slice", ev.YIELD_REASON_RT: "rt ready",
            ev.YIELD_REASON_SLICE | ev.YIELD_REASON_RT: "slice + rt ready"}


class _Builder:
    def __init__(self, cpu_mhz: float) -> None:
        self.mhz = float(cpu_mhz) or 50.0
        self.out: list[dict[str, Any]] = []

    def us(self, cycles: int) -> float:
        return round(cycles / self.mhz, 4)

    def slice(self, tid: int, name: str, cat: str, start: int, end: int, **args: Any) -> None:
        self.out.append({"ph": "X", "pid": PID, "tid": tid, "name": name, "cat": cat,
                         "ts": self.us(start), "dur": self.us(end - start),
                         "args": {"cycles": end - start, "start_cycles": start, **args}})

    def instant(self, tid: int, name: str, cat: str, at: int, **args: Any) -> None:
        self.out.append({"ph": "i", "s": "t", "pid": PID, "tid": tid, "name": name,
                         "cat": cat, "ts": self.us(at), "args": {"cycles": at, **args}})

    def counter(self, name: str, at: int, **values: float) -> None:
        self.out.append({"ph": "C", "pid": PID, "name": name, "ts": self.us(at),
                         "args": values})


def _deadline_misses(evs: list[Event], s: int, e: int, deadline: int, irq_exc: int,
                     b: _Builder) -> None:
    """Deadline-miss instants at release + deadline (the rule of compute_metrics)."""
    asserted: int | None = None
    releases: list[tuple[int, Event, int]] = []
    for i, x in enumerate(evs[:e]):
        if x.id == ev.EXC_ENTRY and x.payload == irq_exc and x.pend >= 0:
            asserted = x.pend
        elif x.id == ev.RT_RELEASE and i > s:
            releases.append((i, x, x.cycles if asserted is None else asserted))
    ends: dict[int, Event] = {}
    for x in evs[releases[0][0] + 1:] if releases else ():
        if x.id == ev.RT_END:
            ends.setdefault(x.payload, x)
    last = evs[-1].cycles
    for _, rel, t_rel in releases:
        limit = t_rel + deadline
        end = ends.get(rel.payload)
        if (end.cycles if end else last) > limit:
            late = (end.cycles - limit) if end else None
            b.instant(RT, f"deadline miss #{rel.payload}", "deadline_miss", limit,
                      release=rel.payload, deadline_cycles=deadline, late_by_cycles=late)


def chrome_trace(trace: Mapping[str, Any], manifest: Mapping[str, Any] | None = None,
                 tvm_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Chrome trace-event document of one run's ``qemu_trace.json`` (``manifest``: its
    manifest.json, for the deadline, the slice and names; ``tvm_config``: for the tiles)."""
    manifest = manifest or {}
    runner = manifest.get("runner") or {}
    sched = manifest.get("schedule") or {}
    mhz = float(trace.get("cpu_mhz") or runner.get("cpu_mhz") or 50)
    b = _Builder(mhz)
    evs = [as_event(x) for x in trace.get("events") or ()]
    irq_exc = ev.BOARD_IRQ_LOAD_EXCEPTION.get(str(trace.get("board")), ev.IRQ_LOAD_EXCEPTION)
    deadline_us = runner.get("rt_deadline_us") or runner.get("irq_period_us")
    deadline = round(float(deadline_us) * mhz) if deadline_us else None
    slice_us = sched.get("slice")
    slice_cyc = round(float(slice_us) * mhz) if isinstance(slice_us, int | float) else 0
    names = {int(x["op"]): f"{x.get('layer', x['op'])} ({x.get('type', 'layer')})"
             for x in trace.get("layers") or () if isinstance(x, Mapping) and "op" in x}
    feats = (tvm_config or {}).get("features") or {}
    per_tile = int(feats.get("micro_per_macro") or 0)
    if per_tile and int(feats.get("yield_checks") or -1) != int(
            (trace.get("metrics") or {}).get("yield_checks", -2)):
        per_tile = 0  # the tiles are known only when the checks are the schedule's
    s = next((i for i, x in enumerate(evs) if x.id == ev.KERNEL_START), len(evs))
    e = next((i for i in range(s + 1, len(evs)) if evs[i].id == ev.KERNEL_END), len(evs))

    opened: dict[tuple[int, int], Event] = {}   # (start id, payload or 0) -> start event
    mt_start: int | None = None                 # current micro-tile's start (in the window)
    tile: list[int] = []                        # micro-tile (start, end) stamps of a tile
    n_mt = n_slices = 0
    last_tick: int | None = None
    expired = False

    def budget(at: int) -> None:
        if slice_cyc and s < len(evs):
            left = 0 if expired or last_tick is None else max(0, last_tick + slice_cyc - at)
            b.counter("slice budget left", at, us=round(left / mhz, 3))

    def flush_tile() -> None:
        if tile:
            k = (n_mt - 1) // per_tile
            b.slice(KERNEL, f"tile {k}", "tile", tile[0], tile[-1], index=k,
                    micro_tiles=len(tile) // 2)
            tile.clear()

    pairs = {ev.PENDSV_ENTER: ev.PENDSV_EXIT, ev.IRQ_ENTER: ev.IRQ_EXIT,
             ev.TICK_ENTER: ev.TICK_EXIT, ev.CAL_START: ev.CAL_END}
    closes = {v: k for k, v in pairs.items()}
    for i, x in enumerate(evs):
        inside = s < i < e
        if x.id in pairs:
            opened[(x.id, 0)] = x
        elif x.id in (ev.LAYER_START, ev.RT_START):
            opened[(x.id, x.payload)] = x
        if x.id == ev.KERNEL_START and i == s:
            mt_start = x.cycles
            budget(x.cycles)
        elif x.id == ev.KERNEL_END and i == e:
            if per_tile:
                flush_tile()
            b.slice(KERNEL, "kernel", "kernel", evs[s].cycles, x.cycles,
                    kernel_cycles=(trace.get("metrics") or {}).get("kernel_cycles"))
            mt_start = None
        elif x.id in closes and (closes[x.id], 0) in opened:
            st = opened.pop((closes[x.id], 0))
            if x.id == ev.PENDSV_EXIT:
                to = "RT task" if x.payload == ev.TASK_RT else "kernel"
                b.slice(PENDSV, f"PendSV → {to}", "pendsv", st.cycles, x.cycles,
                        switch_to=x.payload)
                if inside and x.payload == ev.TASK_KERNEL:
                    mt_start, expired = x.cycles, False  # the kernel resumes, a fresh slice
                    budget(x.cycles)
            elif x.id == ev.IRQ_EXIT:
                b.slice(ISR, "timer ISR", "isr", st.cycles, x.cycles,
                        latency_ticks=st.payload)
            elif x.id == ev.TICK_EXIT:
                b.slice(TICK, "SysTick", "tick", st.cycles, x.cycles)
            else:
                b.slice(KERNEL, "calibration", "calibration", st.cycles, x.cycles,
                        checks=st.payload)
        elif x.id == ev.LAYER_START and inside:
            mt_start = x.cycles
        elif x.id == ev.LAYER_END and (ev.LAYER_START, x.payload) in opened:
            st = opened.pop((ev.LAYER_START, x.payload))
            b.slice(KERNEL, names.get(x.payload, f"layer {x.payload}"), "layer", st.cycles,
                    x.cycles, op=x.payload)
            mt_start = None
        elif x.id == ev.RT_END and (ev.RT_START, x.payload) in opened:
            st = opened.pop((ev.RT_START, x.payload))
            b.slice(RT, f"RT job #{x.payload}", "rt_job", st.cycles, x.cycles,
                    release=x.payload)
        elif x.id == ev.TILE_END and inside:
            b.instant(KERNEL, "yield check", "yield", x.cycles, index=n_mt)
            if mt_start is not None:
                b.slice(KERNEL, f"micro-tile {n_mt}", "micro_tile", mt_start, x.cycles,
                        index=n_mt)
                if per_tile:
                    tile.extend((mt_start, x.cycles))
            n_mt += 1
            mt_start = x.cycles
            if per_tile and n_mt % per_tile == 0:
                flush_tile()
            budget(x.cycles)
        elif x.id == ev.YIELD and inside:
            b.instant(KERNEL, f"yield ({_REASONS.get(x.payload, x.payload)})", "preempt",
                      x.cycles, reasons=x.payload)
        elif x.id == ev.TICK_ENTER:
            last_tick = x.cycles
            if inside:
                budget(x.cycles)
        elif x.id == ev.SLICE_EXPIRE and inside:
            n_slices += 1
            expired = True
            b.instant(TICK, "slice expired", "slice_expire", x.cycles, slice=n_slices)
            b.counter("slices expired", x.cycles, slices=n_slices)
            budget(x.cycles)
        elif x.id == ev.RT_RELEASE:
            b.instant(RT, f"RT release #{x.payload}", "rt_release", x.cycles,
                      release=x.payload)
        elif x.id == ev.EXC_ENTRY and x.payload == irq_exc and x.pend >= 0:
            b.instant(ISR, "IRQ asserted", "irq_assert", x.pend,
                      latency_cycles=x.cycles - x.pend, entry_cycles=x.cycles)
    if deadline is not None and e < len(evs):
        _deadline_misses(evs, s, e, deadline, irq_exc, b)

    title = " ".join(str(p) for p in (manifest.get("experiment"), manifest.get("run"),
                                      trace.get("candidate_id")) if p)
    meta: list[dict[str, Any]] = [{"ph": "M", "pid": PID, "tid": 0, "name": "process_name",
                                   "args": {"name": title or "run"}}]
    for order, (tid, name) in enumerate(TRACKS.items()):
        meta += [{"ph": "M", "pid": PID, "tid": tid, "name": "thread_name",
                  "args": {"name": name}},
                 {"ph": "M", "pid": PID, "tid": tid, "name": "thread_sort_index",
                  "args": {"sort_index": order}}]
    body = sorted(b.out, key=lambda d: (d["ts"], -d.get("dur", 0)))
    return {"traceEvents": meta + body, "displayTimeUnit": "ns",
            "otherData": {"schema": SCHEMA, "title": title, "cpu_mhz": mhz,
                          "cycle_model": trace.get("cycle_model"),
                          "board": trace.get("board"), "schedule": dict(sched),
                          "deadline_cycles": deadline, "slice_cycles": slice_cyc,
                          "metrics": dict(trace.get("metrics") or {}),
                          "units": {"ts": "µs of the modelled clock (cycles / cpu_mhz)",
                                    "args.cycles": (trace.get("units") or {}).get(
                                        "cycles", "modelled cycles")}}}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def timeline_doc(run_dir: Path) -> dict[str, Any]:
    """The Chrome trace document of the run folder (qemu_trace.json required)."""
    from slicert_ops.errors import InputError

    run_dir = Path(run_dir)
    trace = _read(run_dir / "qemu_trace.json")
    if not isinstance(trace, dict) or "events" not in trace:
        raise InputError("no readable qemu_trace.json in the run folder", file=str(run_dir),
                         fix="give a run folder results/<experiment>/run_NNNN of a run that "
                             "finished (failed runs have no trace)")
    manifest = _read(run_dir / "manifest.json") or {}
    return chrome_trace(trace, manifest, _read(run_dir / "tvm_config.json"))


def write_timeline(run_dir: Path, out: Path | None = None) -> tuple[Path, Path]:
    """``timeline.json`` and ``timeline.html`` of a run folder (``out``: the JSON's path,
    default RUN_DIR/timeline.json; the HTML goes next to it). Returns both paths."""
    from slicert_ops.report.timeline_view import render_html

    doc = timeline_doc(run_dir)
    out = Path(out) if out else Path(run_dir) / JSON_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    html_path = out.with_suffix(".html")
    write_text_atomic(out, json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
    write_text_atomic(html_path, render_html(doc))
    return out, html_path


def slice_count(doc: Mapping[str, Any]) -> int:
    return sum(1 for x in doc["traceEvents"] if x.get("ph") == "X")


def ensure_timeline(run_dir: Path) -> list[Path]:
    """The run folder's timeline files, written when missing (a run with a trace); none
    when the trace is absent or unreadable. What tracking uploads with the run."""
    import logging

    run_dir = Path(run_dir)
    paths = [run_dir / JSON_NAME, run_dir / HTML_NAME]
    if not (run_dir / "qemu_trace.json").is_file():
        return []
    if not all(p.is_file() for p in paths):
        try:
            paths = list(write_timeline(run_dir))
        except Exception as exc:  # noqa: BLE001 - a timeline never fails the logging
            logging.getLogger(__name__).warning("no timeline for %s: %s", run_dir, exc)
            return []
    return paths


def report_timelines(all_runs: Any, rankings: list[Any], out_dir: Path, per_ranking: int = 2,
                     ) -> list[tuple[str, Path, Path]]:
    """Timelines of the best candidates into ``out_dir/timelines/``: the first
    ``per_ranking`` of each ranking (tables with ``candidate_id``) and, in a network
    experiment, the fastest network; per candidate its valid repeat with the worst
    preemption latency. Returns (label, html, json) per timeline written."""
    import pandas as pd

    runs = all_runs[all_runs["valid"].astype(bool)] if "valid" in all_runs else all_runs
    ids: list[str] = []
    if "operator.type" in runs:
        nets = runs[runs["operator.type"] == "network"]
        if not nets.empty:
            ids.append(str(nets.sort_values(["kernel_cycles", "run"]).iloc[0]["candidate_id"]))
    for table in rankings:
        for cid in list(table["candidate_id"].head(per_ranking)) if len(table) else []:
            if str(cid) not in ids:
                ids.append(str(cid))
    folder = Path(out_dir) / "timelines"
    out, keep = [], set()
    for cid in ids:
        own = runs[runs["candidate_id"] == cid]
        if own.empty or "run_dir" not in own:
            continue
        lat = pd.to_numeric(own.get("max_preemption_latency_cycles"), errors="coerce")
        row = own.loc[lat.fillna(-1).idxmax()] if lat.notna().any() else own.iloc[0]
        try:
            json_p, html_p = cached_timeline(Path(row["run_dir"]), folder / f"{row['run']}.json")
        except Exception:  # noqa: BLE001 - a missing trace leaves its link out, not the report
            continue
        keep |= {json_p.name, html_p.name, key_path(json_p).name}
        sched = " ".join(f"{c.split('.', 1)[1]}={row[c]}" for c in own.columns
                         if c.startswith("schedule.") and c.count(".") == 1  # not per layer
                         and pd.notna(row[c]))
        if row.get("operator.type") == "network":
            sched = f"network, {sched}" if sched else "network"
        out.append((f"{cid} {row['run']} ({sched})" if sched else f"{cid} {row['run']}",
                    html_p, json_p))
    for old in folder.glob("*run_*.*") if folder.is_dir() else ():
        if old.name not in keep:
            old.unlink()  # the best candidates change as a sweep grows
    return out


def cached_timeline(run_dir: Path, out: Path) -> tuple[Path, Path]:
    """``write_timeline`` unless ``out`` and its HTML already hold this run's timeline (the
    key: this code and the run files it is drawn from), as the report's PNGs are cached."""
    import hashlib

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in (here / "timeline.py", here / "timeline_view.py",
              *(Path(run_dir) / n for n in ("qemu_trace.json", "manifest.json",
                                             "tvm_config.json"))):
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes() if f.is_file() else b"-")
    key, html = h.hexdigest(), out.with_suffix(".html")
    if key_is_current(out, key, html):
        return out, html
    paths = write_timeline(run_dir, out)
    write_key(out, key)
    return paths
