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

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev
from slicert_ops.sim import metrics as vm
from slicert_ops.sim.eventtable import Event, EventTable, as_event
from slicert_ops.sim.plugin_file import PluginOutput, read_plugin_output
from slicert_ops.sim.trace_json import events_json

TRACE_SCHEMA = "slicert-trace/1"
BOARD = "lm3s6965evb"
UNITS = {"cycles": "modelled Cortex-M3 cycles (qemu/cycle_model.md)",
         "us": "microseconds of the modelled core clock (cpu_mhz cycles each)"}


def units(board: str) -> dict[str, str]:
    """The trace's units on ``board``: cycles of its core's model (the M3 boards: UNITS)."""
    core = ev.BOARD_CORE.get(board, "cm3")
    if core == "cm3":
        return UNITS
    return {**UNITS, "cycles": f"modelled {ev.CORE_NAME[core]} cycles (qemu/cycle_model.md)"}

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

__all__ = ["BOARD", "FLOAT_METRICS", "METRIC_NAMES", "TRACE_SCHEMA", "UNITS", "units", "Event",
           "EventTable", "PluginOutput", "TraceEvents", "as_event", "build_trace",
           "compute_metrics", "kernel_window", "parse_plugin_output", "read_plugin_output"]


# --------------------------------------------------------------------------------------
# plugin file


def parse_plugin_output(path: str | os.PathLike[str], *,
                        cycle_model: str | None = ev.CYCLE_MODEL_VERSION,
                        allow_overflow: bool = False) -> tuple[EventTable, dict[str, int]]:
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


class TraceEvents(Sequence[dict[str, Any]]):
    """A trace's ``events``: the JSON dicts of an :class:`EventTable`, made on access;
    :meth:`json_lines` writes them all at once (``rundir.dumps_trace``)."""

    __slots__ = ("table",)

    def __init__(self, table: EventTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [e.to_json() for e in self.table[i]]
        return self.table[i].to_json()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (e.to_json() for e in self.table)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def json_lines(self) -> str:
        """The events as JSON objects (sorted keys), one a line, joined by ``,\\n``."""
        return events_json(self.table)


def build_trace(events: Iterable[Any], totals: Mapping[str, int], *, candidate_id: str,
                repeat: int, seed: int, exit_code: int, sizes: Mapping[str, int],
                metrics: Mapping[str, Any] | None = None, correct: bool | None = None,
                deadline_cycles: int | None = None, cpu_mhz: int = 50,
                board: str = BOARD) -> dict[str, Any]:
    """The ``qemu_trace.json`` document (schema ``slicert-trace/1``).

    ``metrics``: pass the dict from :func:`compute_metrics`; when omitted it is computed
    here from ``correct`` (an output that was not checked counts as not correct) and the
    deadline arguments. ``events`` given as an :class:`EventTable` (what QEMU runs give)
    become a :class:`TraceEvents` view, other events a list of dicts.
    """
    table = EventTable.from_events(events)
    if metrics is None:
        metrics = compute_metrics(table, totals, sizes, bool(correct),
                                  deadline_cycles=deadline_cycles,
                                  irq_exception=ev.BOARD_IRQ_LOAD_EXCEPTION.get(
                                      board, ev.IRQ_LOAD_EXCEPTION))
    evs: Sequence[dict[str, Any]] = TraceEvents(table) if isinstance(events, EventTable) \
        else [e.to_json() for e in table]
    return {
        "schema": TRACE_SCHEMA,
        "cycle_model": ev.cycle_model(board) if board in ev.BOARD_CORE
        else ev.CYCLE_MODEL_VERSION,
        "board": board,
        "cpu_mhz": int(cpu_mhz),
        "units": units(board),
        "candidate_id": candidate_id,
        "repeat": int(repeat),
        "seed": int(seed),
        "exit_code": int(exit_code),
        "totals": {"cycles": int(totals["cycles"]), "instructions": int(totals["instructions"])},
        "events": evs,
        "metrics": dict(metrics),
    }


# --------------------------------------------------------------------------------------
# metrics


def _size(sizes: Mapping[str, int], key: str) -> int:
    for k in (key, f"{key}_bytes"):
        if k in sizes:
            return int(sizes[k])
    return 0


def kernel_window(events: Iterable[Any]) -> tuple[int, int]:
    """Indices of the first ``kernel_start`` and the first ``kernel_end`` after it."""
    return vm.kernel_window(vm.EventIndex(EventTable.from_events(events)))


def compute_metrics(events: Iterable[Any], totals: Mapping[str, int],
                    sizes: Mapping[str, int], correct: bool, *,
                    deadline_cycles: int | None = None,
                    irq_exception: int = ev.IRQ_LOAD_EXCEPTION) -> dict[str, Any]:
    """Every metric of docs/contracts.md from the events (see the module docstring),
    vectorised (``sim.metrics``): an :class:`EventTable`, or any events
    :func:`as_event` takes.

    ``sizes``: ``{"text", "data", "bss"}`` (or ``*_bytes``) of the ELF.
    ``deadline_cycles`` (``rt_deadline_us * cpu_mhz``) is needed when there are RT releases.
    """
    table = EventTable.from_events(events)
    idx = vm.EventIndex(table, irq_exception)
    s, e = vm.kernel_window(idx)
    win = vm.window_metrics(idx, s, e, deadline_cycles=deadline_cycles,
                            last_cycles=max(int(totals["cycles"]), int(table.cycles[-1])))
    check = vm.yield_check_cycles(idx)
    metrics: dict[str, Any] = {
        **{k: win[k] for k in METRIC_NAMES[:5]},
        "yield_check_cycles": check,
        "yield_overhead_cycles": win["yield_checks"] * check,
        **{k: win[k] for k in METRIC_NAMES[7:21]},
        "text_bytes": _size(sizes, "text"),
        "data_bytes": _size(sizes, "data"),
        "bss_bytes": _size(sizes, "bss"),
        "correct": 1 if correct else 0,
    }
    assert tuple(metrics) == METRIC_NAMES
    return metrics
