"""Layer-boundary trace events and per-layer metrics.

Ids (C: ``zephyr/include/slicert/network.h``; Python: ``slicert_ops/sim/events.py``, table
in docs/contracts.md):

| id | name | where | payload |
|---|---|---|---|
| 32 | ``layer_start`` | network function, before an op's kernel call | op index |
| 33 | ``layer_end`` | network function, after it returns | op index |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from slicert_ops.sim import events as ev
from slicert_ops.sim import metrics as vm
from slicert_ops.sim.events import LAYER_END, LAYER_START
from slicert_ops.sim.eventtable import EventTable

#: Metrics kept per layer (names as docs/contracts.md, computed on the layer's window).
LAYER_METRICS = ("kernel_cycles", "wall_cycles", "instructions", "yield_checks", "slices",
                 "pendsv_count", "irq_count", "rt_releases", "max_preemption_latency_cycles",
                 "deadline_misses")
#: Besides those: ``max_granule_cycles`` (:func:`max_granule`), ``macs``, ``macs_per_cycle``.


def layer_windows(events: Sequence[Any]) -> dict[int, tuple[int, int]]:
    """``{op index: (index of layer_start, index of layer_end)}`` in an event list (the
    last complete pair of each op)."""
    table = EventTable.from_events(events)
    marks = np.flatnonzero((table.id == LAYER_START) | (table.id == LAYER_END))
    open_: dict[int, int] = {}
    out: dict[int, tuple[int, int]] = {}
    for i, eid, op in zip(marks.tolist(), table.id[marks].tolist(),
                          table.payload[marks].tolist(), strict=True):
        if eid == LAYER_START:
            open_[op] = i
        elif op in open_:
            out[op] = (open_.pop(op), i)
    return out


def max_granule(window: Sequence[Any]) -> int:
    """Longest stretch of the window between consecutive yield checks (``tile_end``), from
    its start to the first check and from the last check to its end, in cycles: the
    non-preemptible granule the schedule gives (ISR and RT time inside it included, so
    measure it without IRQ load for the schedule's own figure)."""
    table = EventTable.from_events(window)
    return vm.max_granule(vm.EventIndex(table), 0, len(table) - 1)


def layer_metrics(net: Any, events: Sequence[Any], *, deadline_cycles: int | None = None,
                  irq_exception: int | None = None) -> list[dict[str, Any]]:
    """Per-op metrics: each op's window (layer_start..layer_end) measured like a kernel
    window (kernel-thread cycles without ISR/PendSV/RT time, wall cycles, yield checks,
    worst preemption latency of the RT releases inside it). ``irq_exception``: the board's
    IRQ-load exception (``sim.events.irq_load_exception(board)``; default lm3s6965evb).

    A window starts afresh: the kernel thread runs at its ``layer_start``, and RT jobs are
    released at IRQ assertions inside it (earlier ones do not count). The event positions
    are found once (``sim.metrics.EventIndex``) and every window is measured on its own
    events: one pass over the run in all."""
    table = EventTable.from_events(events)
    idx = vm.EventIndex(table, ev.IRQ_LOAD_EXCEPTION if irq_exception is None
                        else irq_exception)
    wins = layer_windows(table)
    # the end of the trace as a window sees it (its events run to the end, kernel markers
    # left out: those are the window's own)
    others = np.flatnonzero((table.id != ev.KERNEL_START) & (table.id != ev.KERNEL_END))
    last_other = int(others[-1]) if others.shape[0] else -1
    out = []
    for op in net.ops:
        if op.index not in wins:
            out.append({"op": op.index, "layer": op.label, "type": op.type, "missing": True})
            continue
        s, e = wins[op.index]
        last_cycles = max(int(table.cycles[-1]), int(table.cycles[max(e, last_other)]))
        m = vm.window_metrics(idx, s, e, assert_from=s, last_cycles=last_cycles,
                              deadline_cycles=deadline_cycles if deadline_cycles else 2**62)
        row = {"op": op.index, "layer": op.label, "type": op.type, "macs": op.layer.macs}
        row.update({k: m[k] for k in LAYER_METRICS})
        row["max_granule_cycles"] = vm.max_granule(idx, s, e)
        row["macs_per_cycle"] = round(op.layer.macs / max(1, m["kernel_cycles"]), 4)
        out.append(row)
    return out
