"""The events of ``qemu_trace.json`` as text, written from an EventTable in a few passes.

Each event is the JSON object ``rundir.dumps_trace`` writes for it (sorted keys, json's
separators), one a line: ``{"cycles": C, "insns": I, "payload": P, "type": "name"}``, an
``exc_entry`` with ``"pend_cycles"`` before ``"type"``. One ``%`` format of the whole text
(a template per event id, the numbers as one tuple) replaces a format call per event.
"""

from __future__ import annotations

import numpy as np

from slicert_ops.sim import events as ev
from slicert_ops.sim.eventtable import EventTable


def event_template(event_id: int) -> str:
    """The ``%d`` template of one event's JSON object."""
    name = ev.event_name(event_id)
    if not (name.isidentifier() and name.isascii()):
        raise ValueError(f"event name {name!r} needs JSON escaping")
    pend = ', "pend_cycles": %d' if event_id == ev.EXC_ENTRY else ""
    return '{"cycles": %d, "insns": %d, "payload": %d' + pend + f', "type": "{name}"}}'


def events_json(table: EventTable) -> str:
    """The events' JSON objects joined by ``,\\n`` (no brackets; ``""`` for no events)."""
    if not len(table):
        return ""
    ids, inverse = np.unique(table.id, return_inverse=True)
    templates = np.array([event_template(int(i)) for i in ids], dtype=object)
    text = ",\n".join(templates[inverse.ravel()].tolist())
    cols = np.stack((table.cycles, table.insns, table.payload, table.pend), axis=1)
    keep = np.ones(cols.shape, dtype=bool)
    keep[:, 3] = table.id == ev.EXC_ENTRY
    return text % tuple(cols[keep].tolist())
