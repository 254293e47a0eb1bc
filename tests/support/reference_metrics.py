"""The per-event metrics, parser and per-layer metrics as they were before they were
vectorised (commit 6d515e6): the reference the numpy versions (``slicert_ops.sim.metrics``,
``slicert_ops.sim.plugin_file``, ``slicert_ops.network.events``) are checked against on
generated event logs (tests/test_vector_metrics.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev
from slicert_ops.sim.eventtable import Event, as_event
from slicert_ops.sim.trace import METRIC_NAMES


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


def layer_windows(events: list[Any]) -> dict[int, tuple[int, int]]:
    open_: dict[int, int] = {}
    out: dict[int, tuple[int, int]] = {}
    for i, e in enumerate(events):
        if e.id == ev.LAYER_START:
            open_[e.payload] = i
        elif e.id == ev.LAYER_END and e.payload in open_:
            out[e.payload] = (open_.pop(e.payload), i)
    return out


def max_granule(window: list[Any]) -> int:
    stamps = [window[0].cycles] + [x.cycles for x in window[1:-1] if x.id == ev.TILE_END] \
        + [window[-1].cycles]
    return max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0)


def layer_window_metrics(events: list[Any], s: int, e: int, *,
                         deadline_cycles: int | None = None,
                         irq_exception: int = ev.IRQ_LOAD_EXCEPTION) -> dict[str, Any]:
    """compute_metrics on the synthetic events the old layer_metrics made for one layer."""
    evs = list(events)
    synth = []
    for j in range(s, len(evs)):
        x = evs[j]
        if x.id in (ev.KERNEL_START, ev.KERNEL_END):
            continue
        if j == s:
            synth.append(Event(ev.KERNEL_START, x.cycles, x.insns))
        elif j == e:
            synth.append(Event(ev.KERNEL_END, x.cycles, x.insns))
        else:
            synth.append(x)
    totals = {"cycles": evs[-1].cycles, "instructions": evs[-1].insns}
    return compute_metrics(synth, totals, {"text": 0, "data": 0, "bss": 0}, True,
                           deadline_cycles=deadline_cycles if deadline_cycles else 2**62,
                           irq_exception=irq_exception)
