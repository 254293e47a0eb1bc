"""The trace metrics, vectorised over an :class:`EventTable` (definitions:
``slicert_ops.sim.trace``'s module docstring and docs/contracts.md).

:class:`EventIndex` finds the positions of the events the metrics look up once per run;
:func:`window_metrics` measures one window (the kernel window, or a network layer's) with
numpy passes over that window and binary searches in those positions, so a network's
per-layer metrics cost one pass over its events in all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev
from slicert_ops.sim.eventtable import EventTable

#: Metrics of one window, in the contract's order (``trace.METRIC_NAMES``).
WINDOW_METRICS: tuple[str, ...] = (
    "kernel_cycles", "wall_cycles", "instructions", "kernel_instructions", "yield_checks",
    "slices", "pendsv_count", "pendsv_overhead_mean_cycles", "pendsv_overhead_max_cycles",
    "irq_count", "irq_latency_min_cycles", "irq_latency_mean_cycles",
    "irq_latency_p99_cycles", "irq_latency_max_cycles", "rt_releases", "rt_jobs",
    "max_preemption_latency_cycles", "mean_preemption_latency_cycles", "deadline_misses",
)

_IRQ_IN = (ev.IRQ_ENTER, ev.TICK_ENTER)
_IRQ_OUT = (ev.IRQ_EXIT, ev.TICK_EXIT)


class EventIndex:
    """Positions (ascending indices into the table) of the events the metrics look up."""

    def __init__(self, table: EventTable, irq_exception: int = ev.IRQ_LOAD_EXCEPTION) -> None:
        self.table = table
        self.irq_exception = irq_exception
        self._pos: dict[int, np.ndarray] = {}
        #: entries of the IRQ-load exception whose assertion is known
        self.irq = np.flatnonzero((table.id == ev.EXC_ENTRY)
                                  & (table.payload == irq_exception) & (table.pend >= 0))

    def pos(self, eid: int) -> np.ndarray:
        got = self._pos.get(eid)
        if got is None:
            got = self._pos[eid] = np.flatnonzero(self.table.id == eid)
        return got

    def first(self, eid: int, lo: int = 0) -> int | None:
        """Index of the first ``eid`` event at or after ``lo``."""
        p = self.pos(eid)
        k = int(np.searchsorted(p, lo))
        return int(p[k]) if k < p.shape[0] else None

    def between(self, eid: int, lo: int, hi: int) -> np.ndarray:
        """Indices of the ``eid`` events in ``lo <= i < hi``."""
        p = self.pos(eid)
        return p[np.searchsorted(p, lo):np.searchsorted(p, hi)]

    def count(self, eid: int, lo: int, hi: int) -> int:
        p = self.pos(eid)
        return int(np.searchsorted(p, hi) - np.searchsorted(p, lo))


def kernel_window(idx: EventIndex) -> tuple[int, int]:
    """Indices of the first ``kernel_start`` and the first ``kernel_end`` after it."""
    start = idx.first(ev.KERNEL_START)
    if start is None:
        raise StageError("parse", "trace has no kernel_start event (the firmware did not "
                                  "reach the kernel call)")
    end = idx.first(ev.KERNEL_END, start + 1)
    if end is None:
        raise StageError("parse", "trace has kernel_start but no kernel_end (the kernel did "
                                  "not return)")
    return start, end


def mean(values: np.ndarray) -> float:
    return round(int(values.sum()) / values.shape[0], 3) if values.shape[0] else 0.0


def p99(values: np.ndarray) -> int:
    """Nearest-rank 99th percentile (0 for no values)."""
    if not values.shape[0]:
        return 0
    ordered = np.sort(values)
    return int(ordered[max(0, math.ceil(0.99 * ordered.shape[0]) - 1)])


def _max(values: np.ndarray) -> int:
    return int(values.max()) if values.shape[0] else 0


def _min(values: np.ndarray) -> int:
    return int(values.min()) if values.shape[0] else 0


def clamped_depth(steps: np.ndarray) -> np.ndarray:
    """Nesting depth after each step of +1/-1/0 steps, never below 0 (``max(0, d - 1)``):
    the running sum minus its running minimum (floored at 0)."""
    run = np.cumsum(steps)
    return run - np.minimum(np.minimum.accumulate(run), 0)


def _last_of(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the last True at or before it (-1 if none)."""
    return np.maximum.accumulate(np.where(mask, np.arange(mask.shape[0]), -1))


def kernel_thread_time(t: EventTable, s: int, e: int) -> tuple[int, int]:
    """Cycles and instructions of the window ``s..e`` spent in the kernel thread: a sweep
    with the ISR / PendSV / task state, which starts afresh at ``s`` (vectorised)."""
    ids = t.id[s + 1:e]                   # the events whose state covers the next step
    irq = clamped_depth(np.isin(ids, _IRQ_IN).astype(np.int64) - np.isin(ids, _IRQ_OUT))
    pendsv = clamped_depth((ids == ev.PENDSV_ENTER).astype(np.int64) - (ids == ev.PENDSV_EXIT))
    exits = _last_of(ids == ev.PENDSV_EXIT)
    task = np.where(exits >= 0, t.payload[s + 1:e][exits], ev.TASK_KERNEL)
    rt_marks = _last_of((ids == ev.RT_START) | (ids == ev.RT_END))
    rt = (rt_marks >= 0) & (ids[rt_marks] == ev.RT_START)
    kernel = (irq == 0) & (pendsv == 0) & (task == ev.TASK_KERNEL) & ~rt
    kernel = np.concatenate(([True], kernel))  # the first step: nothing seen yet
    dc = np.diff(t.cycles[s:e + 1])
    di = np.diff(t.insns[s:e + 1])
    return int(dc[kernel].sum()), int(di[kernel].sum())


def pendsv_overheads(idx: EventIndex, s: int, e: int) -> tuple[int, np.ndarray]:
    """PendSV entries inside ``(s, e)`` and the cycles of each one paired with the next
    exit (an entry is paired with the first exit after it, unless another entry comes
    first)."""
    t = idx.table
    enter = idx.between(ev.PENDSV_ENTER, s + 1, e)
    exit_ = idx.between(ev.PENDSV_EXIT, s + 1, e)
    both = np.concatenate((enter, exit_))
    order = np.argsort(both, kind="stable")
    pos = both[order]
    is_enter = order < enter.shape[0]
    pair = ~is_enter[1:] & is_enter[:-1]
    return int(enter.shape[0]), t.cycles[pos[1:][pair]] - t.cycles[pos[:-1][pair]]


def first_per_payload(idx: EventIndex, eid: int, lo: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted payloads of the ``eid`` events from ``lo`` on, and the cycles of the first one
    with each payload."""
    t = idx.table
    p = idx.between(eid, lo, len(t))
    payloads, first = np.unique(t.payload[p], return_index=True)
    return payloads, t.cycles[p[first]]


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, value) of each wanted key in sorted ``keys``."""
    k = np.searchsorted(keys, wanted)
    k_ok = np.minimum(k, max(keys.shape[0] - 1, 0))
    found = (k < keys.shape[0]) & (keys[k_ok] == wanted) if keys.shape[0] else \
        np.zeros(wanted.shape[0], dtype=bool)
    got = values[k_ok] if keys.shape[0] else np.zeros(wanted.shape[0], dtype=np.int64)
    return found, got


def rt_metrics(idx: EventIndex, s: int, e: int, *, assert_from: int,
               deadline_cycles: int | None, last_cycles: int) -> dict[str, Any]:
    """RT releases inside ``(s, e)``: each released at the assertion of the latest IRQ-load
    entry before it (from ``assert_from`` on; else at its own stamp), matched by release
    index with the first ``rt_start`` / ``rt_end`` after the first release."""
    t = idx.table
    rel = idx.between(ev.RT_RELEASE, s + 1, e)
    irq = idx.irq[np.searchsorted(idx.irq, assert_from):]
    k = np.searchsorted(irq, rel) - 1
    t_rel = np.where(k >= 0, t.pend[irq[np.maximum(k, 0)]] if irq.shape[0] else 0,
                     t.cycles[rel])
    if rel.shape[0] and deadline_cycles is None:
        raise ValueError("compute_metrics: RT releases present, pass deadline_cycles=")
    preempt = np.zeros(0, dtype=np.int64)
    misses = 0
    if rel.shape[0]:
        lo = int(rel[0]) + 1
        wanted = t.payload[rel]
        started, start_c = _lookup(*first_per_payload(idx, ev.RT_START, lo), wanted)
        ended, end_c = _lookup(*first_per_payload(idx, ev.RT_END, lo), wanted)
        preempt = start_c[started] - t_rel[started]
        limit = t_rel + int(deadline_cycles or 0)
        misses = int(np.count_nonzero(np.where(ended, end_c > limit, last_cycles > limit)))
    return {
        "rt_releases": int(rel.shape[0]),
        "rt_jobs": idx.count(ev.RT_END, s + 1, e),
        "max_preemption_latency_cycles": _max(preempt),
        "mean_preemption_latency_cycles": mean(preempt),
        "deadline_misses": misses,
    }


def window_metrics(idx: EventIndex, s: int, e: int, *, deadline_cycles: int | None,
                   last_cycles: int, assert_from: int = 0) -> dict[str, Any]:
    """The :data:`WINDOW_METRICS` of the window from event ``s`` to event ``e``.

    ``assert_from``: IRQ assertions before this event do not release RT jobs (a layer's
    window starts afresh); ``last_cycles``: the end of the trace (a job that never ends
    misses its deadline if the trace runs past it)."""
    t = idx.table
    k_cycles, k_insns = kernel_thread_time(t, s, e)
    pendsv_count, pendsv = pendsv_overheads(idx, s, e)
    irq = idx.irq[np.searchsorted(idx.irq, s + 1):np.searchsorted(idx.irq, e)]
    lat = t.cycles[irq] - t.pend[irq]
    out: dict[str, Any] = {
        "kernel_cycles": k_cycles,
        "wall_cycles": int(t.cycles[e] - t.cycles[s]),
        "instructions": int(t.insns[e] - t.insns[s]),
        "kernel_instructions": k_insns,
        "yield_checks": idx.count(ev.TILE_END, s + 1, e),
        "slices": idx.count(ev.SLICE_EXPIRE, s + 1, e),
        "pendsv_count": pendsv_count,
        "pendsv_overhead_mean_cycles": mean(pendsv),
        "pendsv_overhead_max_cycles": _max(pendsv),
        "irq_count": int(lat.shape[0]),
        "irq_latency_min_cycles": _min(lat),
        "irq_latency_mean_cycles": mean(lat),
        "irq_latency_p99_cycles": p99(lat),
        "irq_latency_max_cycles": _max(lat),
    }
    out.update(rt_metrics(idx, s, e, assert_from=assert_from,
                          deadline_cycles=deadline_cycles, last_cycles=last_cycles))
    return out


def yield_check_cycles(idx: EventIndex) -> int:
    """(``cal_end`` - ``cal_start``) / N of the first ``cal_start`` (payload N) and the next
    ``cal_end``, rounded; 0 without them."""
    t = idx.table
    cs = idx.first(ev.CAL_START)
    if cs is None or t.payload[cs] <= 0:
        return 0
    ce = idx.first(ev.CAL_END, cs + 1)
    if ce is None:
        return 0
    return round(int(t.cycles[ce] - t.cycles[cs]) / int(t.payload[cs]))


def max_granule(idx: EventIndex, s: int, e: int) -> int:
    """Longest stretch of the window ``s..e`` between consecutive yield checks
    (``tile_end``), from its start to the first check and from the last one to its end."""
    t = idx.table
    stamps = t.cycles[np.concatenate(([s], idx.between(ev.TILE_END, s + 1, e), [e]))]
    return int(np.diff(stamps).max())
