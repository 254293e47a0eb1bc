"""Trace events: one :class:`Event` tuple, or a whole run's events as numpy columns.

:class:`EventTable` holds a run's events as five int64 columns (``id``, ``cycles``,
``insns``, ``payload``, ``pend``) so that parsing, metrics and the trace writer cost numpy
passes, not one Python object per event; it is still a ``Sequence[Event]`` (index, iterate,
compare with a list of events), so code that walks events one by one keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, overload

import numpy as np

from slicert_ops.sim import events as ev

COLUMNS = ("id", "cycles", "insns", "payload", "pend")


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


class EventTable(Sequence[Event]):
    """A run's events in execution order, as int64 numpy columns (see the module doc)."""

    __slots__ = COLUMNS

    def __init__(self, id: Any, cycles: Any, insns: Any, payload: Any, pend: Any) -> None:
        cols = [np.ascontiguousarray(c, dtype=np.int64) for c in (id, cycles, insns, payload,
                                                                  pend)]
        if len({c.shape for c in cols}) != 1 or cols[0].ndim != 1:
            raise ValueError("EventTable: columns must be 1-d and of one length")
        self.id, self.cycles, self.insns, self.payload, self.pend = cols

    @classmethod
    def empty(cls) -> EventTable:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, z)

    @classmethod
    def from_events(cls, events: Iterable[Any]) -> EventTable:
        """A table from Events, trace-JSON dicts or tuples (:func:`as_event`); a table is
        returned as it is."""
        if isinstance(events, EventTable):
            return events
        rows = [as_event(e) for e in events]
        if not rows:
            return cls.empty()
        return cls(*np.array(rows, dtype=np.int64).T)

    def __len__(self) -> int:
        return int(self.id.shape[0])

    @overload
    def __getitem__(self, i: int) -> Event: ...

    @overload
    def __getitem__(self, i: slice) -> EventTable: ...

    def __getitem__(self, i: int | slice) -> Event | EventTable:
        if isinstance(i, slice):
            return EventTable(*(getattr(self, c)[i] for c in COLUMNS))
        return Event(*(int(getattr(self, c)[i]) for c in COLUMNS))

    def __iter__(self) -> Iterator[Event]:
        return map(Event._make, zip(*(getattr(self, c).tolist() for c in COLUMNS),
                                    strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventTable):
            return all(np.array_equal(getattr(self, c), getattr(other, c)) for c in COLUMNS)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and list(self) == [as_event(o) for o in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EventTable({len(self)} events)"
