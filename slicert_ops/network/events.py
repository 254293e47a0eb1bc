"""Layer-boundary trace events and per-layer metrics.

Ids (C: ``zephyr/include/slicert/network.h``; Python: ``slicert_ops/sim/events.py``, table
in docs/contracts.md):

| id | name | where | payload |
|---|---|---|---|
| 32 | ``layer_start`` | network function, before an op's kernel call | op index |
| 33 | ``layer_end`` | network function, after it returns | op index |
"""

from __future__ import annotations

from typing import Any

from slicert_ops.sim.events import LAYER_END, LAYER_START

#: Metrics kept per layer (names as docs/contracts.md, computed on the layer's window).
LAYER_METRICS = ("kernel_cycles", "wall_cycles", "instructions", "yield_checks", "slices",
                 "pendsv_count", "irq_count", "rt_releases", "max_preemption_latency_cycles",
                 "deadline_misses")
#: Besides those: ``max_granule_cycles`` (:func:`max_granule`), ``macs``, ``macs_per_cycle``.


def layer_windows(events: list[Any]) -> dict[int, tuple[int, int]]:
    """``{op index: (index of layer_start, index of layer_end)}`` in an event list."""
    open_: dict[int, int] = {}
    out: dict[int, tuple[int, int]] = {}
    for i, e in enumerate(events):
        if e.id == LAYER_START:
            open_[e.payload] = i
        elif e.id == LAYER_END and e.payload in open_:
            out[e.payload] = (open_.pop(e.payload), i)
    return out


def max_granule(window: list[Any]) -> int:
    """Longest stretch of the window between consecutive yield checks (``tile_end``), from
    its start to the first check and from the last check to its end, in cycles: the
    non-preemptible granule the schedule gives (ISR and RT time inside it included, so
    measure it without IRQ load for the schedule's own figure)."""
    from slicert_ops.sim import events as ev

    stamps = [window[0].cycles] + [x.cycles for x in window[1:-1] if x.id == ev.TILE_END] \
        + [window[-1].cycles]
    return max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0)


def layer_metrics(net: Any, events: list[Any], *, deadline_cycles: int | None = None,
                  irq_exception: int | None = None) -> list[dict[str, Any]]:
    """Per-op metrics: each op's window (layer_start..layer_end) measured like a kernel
    window (kernel-thread cycles without ISR/PendSV/RT time, wall cycles, yield checks,
    worst preemption latency of the RT releases inside it). ``irq_exception``: the board's
    IRQ-load exception (``sim.events.irq_load_exception(board)``; default lm3s6965evb)."""
    from slicert_ops.sim import events as ev
    from slicert_ops.sim.trace import Event, compute_metrics

    if irq_exception is None:
        irq_exception = ev.IRQ_LOAD_EXCEPTION

    evs = list(events)
    wins = layer_windows(evs)
    out = []
    for op in net.ops:
        if op.index not in wins:
            out.append({"op": op.index, "layer": op.label, "type": op.type, "missing": True})
            continue
        s, e = wins[op.index]
        synth = []
        # From the layer's start on: the kernel thread runs there (it emits layer_start),
        # so the events before it change nothing of the window's figures.
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
        m = compute_metrics(synth, totals, {"text": 0, "data": 0, "bss": 0}, True,
                            deadline_cycles=deadline_cycles if deadline_cycles else 2**62,
                            irq_exception=irq_exception)
        row = {"op": op.index, "layer": op.label, "type": op.type, "macs": op.layer.macs}
        row.update({k: m[k] for k in LAYER_METRICS})
        row["max_granule_cycles"] = max_granule(evs[s:e + 1])
        row["macs_per_cycle"] = round(op.layer.macs / max(1, m["kernel_cycles"]), 4)
        out.append(row)
    return out
