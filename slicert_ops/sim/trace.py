"""Plugin output -> events -> trace JSON (``slicert-trace/1``) and metrics.

The plugin file (docs/contracts.md, "Plugin")::

    # slicert-plugin <plugin version> cycle-model <CYCLE_MODEL_VERSION>
    # <free comment lines>            (e.g. "# overflow dropped N events after M")
    E <id> <cycles> <insns> <payload>
    X <exception> <pend cycles|-> <entry cycles> <insns>
    T <cycles> <insns>

Units: every cycle figure is a modelled Cortex-M3 cycle (qemu/cycle_model.md); virtual
time is modelled cycles, so a µs of the manifest is ``cpu_mhz`` cycles.

Stamps: an event's ``cycles``/``insns`` count everything retired *before* its stub's
``bx lr`` (the exec callback runs before the stub's own inline counters). An ``X`` line
(event ``exc_entry``) is an exception entry as QEMU takes it: ``cycles`` is when the
handler's first instruction starts (entry cost included), ``pend`` when the exception
was asserted (the timer's exact expiry for a timer IRQ).

Metric definitions (the names are the contract's; see also qemu/cycle_model.md):

- Kernel window: the first ``kernel_start`` to the first ``kernel_end`` after it.
  ``wall_cycles``/``instructions`` are the stamp differences across it. Every count
  and latency below (slices, PendSVs, IRQs, RT releases...) is over events inside it.
- ``kernel_cycles``/``kernel_instructions``: the window minus the time attributed to
  ISRs (``irq_enter``..``irq_exit``), PendSV (``pendsv_enter``..``pendsv_exit``) and the
  RT task (``rt_start``..``rt_end``, and whenever the last ``pendsv_exit`` switched to
  a task other than 0). Nested/overlapping intervals are counted once. Not visible to
  markers and so counted as kernel time: exception entry cycles and the ISR prologue
  before ``irq_enter`` / epilogue after ``irq_exit`` (and the same few instructions around
  ``tick_enter``/``tick_exit`` of the SysTick ISR).
- ``yield_check_cycles``: (``cal_end`` - ``cal_start``) cycles / N (the ``cal_start``
  payload), rounded to an integer; 0 without calibration events.
  ``yield_overhead_cycles`` = ``yield_checks`` x ``yield_check_cycles``, where
  ``yield_checks`` counts ``tile_end`` events in the window.
- PendSV overhead: each ``pendsv_enter`` paired with the next ``pendsv_exit``.
- IRQ latency: for each entry of the IRQ-load exception (``exc_entry``, payload
  ``IRQ_LOAD_EXCEPTION``) in the window, handler start - assertion, in cycles: the
  12-cycle entry, tail-chaining, masked windows (PRIMASK/BASEPRI), a higher-priority
  handler running, the rest of an instruction, as on silicon. p99 is nearest-rank.
- Preemption latency: ``rt_start`` - the assertion of the IRQ that released the job
  (the latest IRQ-load ``exc_entry`` before its ``rt_release``), matched by release index.
- Deadline misses: a release whose ``rt_end`` (same index) comes later than assertion +
  ``deadline_cycles`` (= ``rt_deadline_us * cpu_mhz``), or never comes although the
  trace runs past it.
- Means are floats rounded to 3 decimals; every other metric is an int.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev

TRACE_SCHEMA = "slicert-trace/1"
BOARD = "lm3s6965evb"
UNITS = {"cycles": "modelled Cortex-M3 cycles (qemu/cycle_model.md)",
         "us": "microseconds of the modelled core clock (cpu_mhz cycles each)"}

METRIC_NAMES: tuple[str, ...] = (
    "kernel_cycles", "wall_cycles", "instructions", "kernel_instructions",
    "yield_checks", "yield_check_cycles", "yield_overhead_cycles", "slices",
    "pendsv_count", "pendsv_overhead_mean_cycles", "pendsv_overhead_max_cycles",
    "irq_count", "irq_latency_min_cycles", "irq_latency_mean_cycles",
    "irq_latency_p99_cycles", "irq_latency_max_cycles",
    "rt_releases", "rt_jobs", "max_preemption_latency_cycles",
    "mean_preemption_latency_cycles", "deadline_misses",
    "text_bytes", "data_bytes", "bss_bytes", "correct",
)
FLOAT_METRICS = frozenset({
    "pendsv_overhead_mean_cycles", "irq_latency_mean_cycles",
    "mean_preemption_latency_cycles",
})


class Event(NamedTuple):
    """One stamped trace event (``pend``: assertion cycle of an ``exc_entry``, else -1)."""

    id: int
    cycles: int
    insns: int
    payload: int = 0
    pend: int = -1

    @property
    def type(self) -> str:
        return ev.event_name(self.id)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "cycles": self.cycles, "insns": self.insns,
                               "payload": self.payload}
        if self.id == ev.EXC_ENTRY:
            out["pend_cycles"] = self.pend
        return out


class PluginOutput(NamedTuple):
    """Everything in a plugin file."""

    plugin_version: str
    cycle_model: str
    events: list[Event]
    totals: dict[str, int]
    dropped_events: int
    comments: list[str]


def as_event(obj: Any) -> Event:
    """An :class:`Event` from an Event, a trace-JSON dict (``type`` or ``id``), or a tuple."""
    if isinstance(obj, Event):
        return obj
    if isinstance(obj, Mapping):
        eid = obj["id"] if "id" in obj else ev.event_id(obj["type"])
        return Event(int(eid), int(obj["cycles"]), int(obj["insns"]),
                     int(obj.get("payload", 0)), int(obj.get("pend_cycles", -1)))
    if isinstance(obj, tuple | list):
        eid = ev.event_id(obj[0]) if isinstance(obj[0], str) else int(obj[0])
        return Event(eid, *(int(x) for x in obj[1:]))
    raise TypeError(f"cannot make a trace event from {obj!r}")


# --------------------------------------------------------------------------------------
# plugin file


def read_plugin_output(path: str | os.PathLike[str]) -> PluginOutput:
    """Parse a plugin file completely; raises StageError("parse", "<file>:<line>: ...")."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise StageError("parse", f"{name}: plugin output missing (QEMU was killed or "
                                  "crashed before exit; see its stderr)") from None
    except OSError as exc:
        raise StageError("parse", f"{name}: cannot read plugin output: {exc}") from None

    def fail(lineno: int, msg: str) -> StageError:
        return StageError("parse", f"{name}:{lineno}: {msg}")

    if not data:
        raise fail(1, "empty plugin output (QEMU did not reach exit)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        lineno = data[: exc.start].count(b"\n") + 1
        raise fail(lineno, "corrupt plugin output (non-ASCII byte)") from None
    lines = text.split("\n")
    if lines[-1] != "":
        raise fail(len(lines), "truncated plugin output (last line has no newline)")
    lines.pop()

    head = lines[0].split()
    if len(head) != 5 or head[:2] != ["#", "slicert-plugin"] or head[3] != "cycle-model":
        raise fail(1, f"not a slicert plugin file (header {lines[0][:60]!r})")
    plugin_version, cycle_model = head[2], head[4]

    events: list[Event] = []
    comments: list[str] = []
    totals: dict[str, int] | None = None
    dropped = 0
    last_c = last_i = 0
    for lineno, line in enumerate(lines[1:], start=2):
        if totals is not None:
            raise fail(lineno, "data after the totals line")
        if line.startswith("#"):
            comments.append(line[1:].strip())
            words = line.split()
            if len(words) >= 4 and words[1:3] == ["overflow", "dropped"]:
                try:
                    dropped = int(words[3])
                except ValueError:
                    raise fail(lineno, f"bad overflow line {line!r}") from None
            continue
        parts = line.split(" ")
        if parts[0] == "X" and len(parts) == 5 and parts[2] == "-":
            parts[2] = "-1"
        try:
            nums = [int(p) for p in parts[1:]]
        except ValueError:
            raise fail(lineno, f"corrupt line {line[:80]!r}") from None
        if any(n < 0 for n in nums) and not (parts[0] == "X" and nums[1] == -1
                                              and min(nums[0], *nums[2:]) >= 0):
            raise fail(lineno, f"negative number in {line[:80]!r}")
        if parts[0] == "E" and len(nums) == 4:
            eid, cyc, ins, payload = nums
            if eid > ev.MAX_EVENT_ID or payload > 0xFFFFFFFF:
                raise fail(lineno, f"event id/payload out of range in {line!r}")
            if cyc < last_c or ins < last_i:
                raise fail(lineno, "event stamps go backwards (corrupt file)")
            last_c, last_i = cyc, ins
            events.append(Event(eid, cyc, ins, payload))
        elif parts[0] == "X" and len(nums) == 4:
            exc, pend, cyc, ins = nums
            if cyc < last_c or ins < last_i or pend > cyc:
                raise fail(lineno, "event stamps go backwards (corrupt file)")
            last_c, last_i = cyc, ins
            events.append(Event(ev.EXC_ENTRY, cyc, ins, exc, pend))
        elif parts[0] == "T" and len(nums) == 2:
            if nums[0] < last_c or nums[1] < last_i:
                raise fail(lineno, "totals smaller than the last event stamp (corrupt file)")
            totals = {"cycles": nums[0], "instructions": nums[1]}
        else:
            raise fail(lineno, f"corrupt line {line[:80]!r} (expected 'E id cycles insns "
                               "payload', 'X exc pend cycles insns' or 'T cycles insns')")
    if totals is None:
        raise fail(len(lines) + 1, "truncated plugin output (no 'T cycles insns' line)")
    return PluginOutput(plugin_version, cycle_model, events, totals, dropped, comments)


def parse_plugin_output(path: str | os.PathLike[str], *,
                        cycle_model: str | None = ev.CYCLE_MODEL_VERSION,
                        allow_overflow: bool = False) -> tuple[list[Event], dict[str, int]]:
    """Events (execution order) and totals ``{"cycles", "instructions"}`` of a plugin file.

    Raises :class:`StageError` (stage ``parse``) naming the file and line on a corrupt or
    truncated file, on a cycle-model mismatch (``cycle_model=None`` skips the check), and
    when the plugin's event buffer overflowed (unless ``allow_overflow``).
    """
    out = read_plugin_output(path)
    name = os.fspath(path)
    if cycle_model is not None and out.cycle_model != cycle_model:
        raise StageError("parse", f"{name}:1: plugin cycle model {out.cycle_model!r}, expected "
                                  f"{cycle_model!r} (rebuild it: qemu/build.sh --force)")
    if out.dropped_events and not allow_overflow:
        raise StageError("parse", f"{name}: plugin event buffer overflowed, "
                                  f"{out.dropped_events} events dropped (metrics would be "
                                  "wrong; trace fewer events or raise MAX_EVENTS)")
    return out.events, out.totals


# --------------------------------------------------------------------------------------
# trace JSON


def build_trace(events: Iterable[Any], totals: Mapping[str, int], *, candidate_id: str,
                repeat: int, seed: int, exit_code: int, sizes: Mapping[str, int],
                metrics: Mapping[str, Any] | None = None, correct: bool | None = None,
                deadline_cycles: int | None = None, cpu_mhz: int = 50,
                board: str = BOARD) -> dict[str, Any]:
    """The ``qemu_trace.json`` document (schema ``slicert-trace/1``).

    ``metrics``: pass the dict from :func:`compute_metrics`; when omitted it is computed
    here from ``correct`` (an output that was not checked counts as not correct) and the
    deadline arguments.
    """
    evs = [as_event(e) for e in events]
    if metrics is None:
        metrics = compute_metrics(evs, totals, sizes, bool(correct),
                                  deadline_cycles=deadline_cycles,
                                  irq_exception=ev.BOARD_IRQ_LOAD_EXCEPTION.get(
                                      board, ev.IRQ_LOAD_EXCEPTION))
    return {
        "schema": TRACE_SCHEMA,
        "cycle_model": ev.CYCLE_MODEL_VERSION,
        "board": board,
        "cpu_mhz": int(cpu_mhz),
        "units": UNITS,
        "candidate_id": candidate_id,
        "repeat": int(repeat),
        "seed": int(seed),
        "exit_code": int(exit_code),
        "totals": {"cycles": int(totals["cycles"]), "instructions": int(totals["instructions"])},
        "events": [e.to_json() for e in evs],
        "metrics": dict(metrics),
    }


# --------------------------------------------------------------------------------------
# metrics


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def _p99(values: list[float]) -> float:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def _size(sizes: Mapping[str, int], key: str) -> int:
    for k in (key, f"{key}_bytes"):
        if k in sizes:
            return int(sizes[k])
    return 0


def kernel_window(events: list[Event]) -> tuple[int, int]:
    """Indices of the first ``kernel_start`` and the first ``kernel_end`` after it."""
    start = next((i for i, e in enumerate(events) if e.id == ev.KERNEL_START), None)
    if start is None:
        raise StageError("parse", "trace has no kernel_start event (the firmware did not "
                                  "reach the kernel call)")
    end = next((i for i in range(start + 1, len(events)) if events[i].id == ev.KERNEL_END),
               None)
    if end is None:
        raise StageError("parse", "trace has kernel_start but no kernel_end (the kernel did "
                                  "not return)")
    return start, end


def compute_metrics(events: Iterable[Any], totals: Mapping[str, int],
                    sizes: Mapping[str, int], correct: bool, *,
                    deadline_cycles: int | None = None,
                    irq_exception: int = ev.IRQ_LOAD_EXCEPTION) -> dict[str, Any]:
    """Every metric of docs/contracts.md from an event list (see the module docstring).

    ``sizes``: ``{"text", "data", "bss"}`` (or ``*_bytes``) of the ELF.
    ``deadline_cycles`` (``rt_deadline_us * cpu_mhz``) is needed when there are RT releases.
    """
    evs = [as_event(e) for e in events]
    s, e = kernel_window(evs)
    window = evs[s:e + 1]
    start, end = window[0], window[-1]
    wall = end.cycles - start.cycles
    instructions = end.insns - start.insns

    # kernel-thread time: sweep the window with the ISR / PendSV / task state.
    irq_depth = pendsv_depth = 0
    task = ev.TASK_KERNEL
    rt_active = False
    k_cycles = k_insns = 0
    prev = start
    for cur in window[1:]:
        if irq_depth == 0 and pendsv_depth == 0 and task == ev.TASK_KERNEL and not rt_active:
            k_cycles += cur.cycles - prev.cycles
            k_insns += cur.insns - prev.insns
        if cur.id in (ev.IRQ_ENTER, ev.TICK_ENTER):
            irq_depth += 1
        elif cur.id in (ev.IRQ_EXIT, ev.TICK_EXIT):
            irq_depth = max(0, irq_depth - 1)
        elif cur.id == ev.PENDSV_ENTER:
            pendsv_depth += 1
        elif cur.id == ev.PENDSV_EXIT:
            pendsv_depth = max(0, pendsv_depth - 1)
            task = cur.payload
        elif cur.id == ev.RT_START:
            rt_active = True
        elif cur.id == ev.RT_END:
            rt_active = False
        prev = cur

    inner = window[1:-1]
    yield_checks = sum(1 for x in inner if x.id == ev.TILE_END)
    slices = sum(1 for x in inner if x.id == ev.SLICE_EXPIRE)

    # calibration: the first cal_start and the next cal_end anywhere in the trace
    yield_check_cycles = 0
    cs = next((i for i, x in enumerate(evs) if x.id == ev.CAL_START), None)
    if cs is not None and evs[cs].payload > 0:
        ce = next((i for i in range(cs + 1, len(evs)) if evs[i].id == ev.CAL_END), None)
        if ce is not None:
            yield_check_cycles = round((evs[ce].cycles - evs[cs].cycles) / evs[cs].payload)

    # PendSV: enter paired with the next exit
    pendsv: list[int] = []
    pendsv_count = 0
    open_enter: Event | None = None
    for x in inner:
        if x.id == ev.PENDSV_ENTER:
            pendsv_count += 1
            open_enter = x
        elif x.id == ev.PENDSV_EXIT and open_enter is not None:
            pendsv.append(x.cycles - open_enter.cycles)
            open_enter = None

    # IRQ latency: assertion -> handler start, exact modelled cycles (from QEMU's entries)
    lat = [x.cycles - x.pend for x in inner
           if x.id == ev.EXC_ENTRY and x.payload == irq_exception and x.pend >= 0]

    # RT: releases in the window, matched by release index with later starts / ends; a
    # job is released at the assertion of the IRQ whose handler released it
    releases: list[tuple[int, Event, int]] = []
    asserted: int | None = None
    for i, x in enumerate(evs[:e]):
        if x.id == ev.EXC_ENTRY and x.payload == irq_exception and x.pend >= 0:
            asserted = x.pend
        elif x.id == ev.RT_RELEASE and i > s:
            releases.append((i, x, x.cycles if asserted is None else asserted))
    rt_jobs = sum(1 for x in inner if x.id == ev.RT_END)
    if releases and deadline_cycles is None:
        raise ValueError("compute_metrics: RT releases present, pass deadline_cycles=")
    last_cycles = max(int(totals["cycles"]), evs[-1].cycles)
    # the first rt_start / rt_end of each release index after its release (one pass)
    first: dict[tuple[int, int], Event] = {}
    for x in evs[releases[0][0] + 1:] if releases else ():
        if x.id in (ev.RT_START, ev.RT_END):
            first.setdefault((x.id, x.payload), x)
    preempt: list[int] = []
    misses = 0
    for _i, rel, t_rel in releases:
        start_ev = first.get((ev.RT_START, rel.payload))
        end_ev = first.get((ev.RT_END, rel.payload))
        if start_ev is not None:
            preempt.append(start_ev.cycles - t_rel)
        limit = t_rel + int(deadline_cycles or 0)
        missed = (end_ev.cycles > limit) if end_ev else (last_cycles > limit)
        misses += int(missed)

    metrics: dict[str, Any] = {
        "kernel_cycles": k_cycles,
        "wall_cycles": wall,
        "instructions": instructions,
        "kernel_instructions": k_insns,
        "yield_checks": yield_checks,
        "yield_check_cycles": yield_check_cycles,
        "yield_overhead_cycles": yield_checks * yield_check_cycles,
        "slices": slices,
        "pendsv_count": pendsv_count,
        "pendsv_overhead_mean_cycles": _mean(pendsv),
        "pendsv_overhead_max_cycles": max(pendsv, default=0),
        "irq_count": len(lat),
        "irq_latency_min_cycles": min(lat, default=0),
        "irq_latency_mean_cycles": _mean(lat),
        "irq_latency_p99_cycles": int(_p99(lat)),
        "irq_latency_max_cycles": max(lat, default=0),
        "rt_releases": len(releases),
        "rt_jobs": rt_jobs,
        "max_preemption_latency_cycles": max(preempt, default=0),
        "mean_preemption_latency_cycles": _mean(preempt),
        "deadline_misses": misses,
        "text_bytes": _size(sizes, "text"),
        "data_bytes": _size(sizes, "data"),
        "bss_bytes": _size(sizes, "bss"),
        "correct": 1 if correct else 0,
    }
    assert tuple(metrics) == METRIC_NAMES
    return metrics
