"""Read the cycle plugin's event file (format: ``slicert_ops.sim.trace``) into an EventTable.

The usual file -- header, comment lines, ``E``/``X`` event lines, optional comment lines,
the ``T`` line -- is parsed with a few whole-file passes (one regular-expression check of
the event block, ``np.fromstring`` of its numbers, vectorised range and order checks).
Anything else (interleaved comments, ``+5``, CR line ends, a corrupt or truncated file...)
goes to the line-by-line parser :func:`parse_lines`, which defines the format: it gives the
same events for every file both accept, and the errors naming file and line.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev
from slicert_ops.sim.eventtable import Event, EventTable


class PluginOutput(NamedTuple):
    """Everything in a plugin file."""

    plugin_version: str
    cycle_model: str
    events: EventTable
    totals: dict[str, int]
    dropped_events: int
    comments: list[str]


# One event line; at most 18 digits a number (int64 holds them exactly).
_N = rb"\d{1,18}"
_EVENT_BLOCK = re.compile(rb"(?:E %s %s %s %s\n|X %s (?:%s|-) %s %s\n)*"
                          % ((_N,) * 4 + (_N,) * 4))
_TOTALS = re.compile(rb"T (%s) (%s)\n" % (_N, _N))
_KIND = bytes.maketrans(b"EX", b"01")
_MAX_PAYLOAD = 0xFFFFFFFF


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
    fast = parse_fast(data)
    return fast if fast is not None else parse_lines(data, name)


def parse_fast(data: bytes) -> PluginOutput | None:
    """The usual file's PluginOutput, or None when it is anything else (then
    :func:`parse_lines` decides: it accepts it or names the bad line)."""
    if not data.endswith(b"\n") or not data.isascii():
        return None
    # header + leading comment lines
    pos, head_lines = 0, []
    while data.startswith(b"#", pos):
        nl = data.index(b"\n", pos)
        head_lines.append(data[pos:nl].decode("ascii"))
        pos = nl + 1
    if not head_lines:
        return None
    # the totals line, and comment lines just before it
    t_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    if t_start < pos:
        return None
    totals_m = _TOTALS.fullmatch(data, t_start)
    if totals_m is None:
        return None
    end, tail_lines = t_start, []
    while end > pos:
        prev = data.rfind(b"\n", pos, end - 1) + 1
        if prev < pos or not data.startswith(b"#", prev):
            break
        tail_lines.insert(0, data[prev:end - 1].decode("ascii"))
        end = prev
    block = data[pos:end]
    if _EVENT_BLOCK.fullmatch(block) is None:
        return None
    head = parse_header(head_lines[0])
    if head is None:
        return None
    comments, dropped = [], 0
    for line in head_lines[1:] + tail_lines:
        comments.append(line[1:].strip())
        try:
            got = overflow_count(line)
        except ValueError:
            return None
        dropped = dropped if got is None else got
    table = _block_table(block)
    if table is None:
        return None
    tc, ti = int(totals_m.group(1)), int(totals_m.group(2))
    if len(table) and (tc < int(table.cycles[-1]) or ti < int(table.insns[-1])):
        return None
    return PluginOutput(head[0], head[1], table, {"cycles": tc, "instructions": ti},
                        dropped, comments)


def _block_table(block: bytes) -> EventTable | None:
    """The events of a block that matched ``_EVENT_BLOCK``, or None if a value is out of
    range or the stamps go backwards."""
    n = block.count(b"\n")
    if n == 0:
        return EventTable.empty()
    text = block.translate(_KIND).replace(b" - ", b" -1 ").replace(b"\n", b" ")
    nums = np.fromstring(text, dtype=np.int64, sep=" ")  # type: ignore[call-overload]
    if nums.shape[0] != 5 * n:
        return None
    rows = nums.reshape(n, 5)
    is_x = rows[:, 0] == 1
    ids = np.where(is_x, ev.EXC_ENTRY, rows[:, 1])
    cycles = np.where(is_x, rows[:, 3], rows[:, 2])
    insns = np.where(is_x, rows[:, 4], rows[:, 3])
    payload = np.where(is_x, rows[:, 1], rows[:, 4])
    pend = np.where(is_x, rows[:, 2], -1)
    e_rows = ~is_x
    if np.any(ids[e_rows] > ev.MAX_EVENT_ID) or np.any(payload[e_rows] > _MAX_PAYLOAD):
        return None
    if np.any(np.diff(cycles) < 0) or np.any(np.diff(insns) < 0) \
            or np.any(pend[is_x] > cycles[is_x]):
        return None
    return EventTable(ids, cycles, insns, payload, pend)


def parse_header(line: str) -> tuple[str, str] | None:
    """(plugin version, cycle model) of the header line, or None if it is not one."""
    head = line.split()
    if len(head) != 5 or head[:2] != ["#", "slicert-plugin"] or head[3] != "cycle-model":
        return None
    return head[2], head[4]


def overflow_count(line: str) -> int | None:
    """Events dropped according to a comment line, None if it is no overflow line; raises
    ValueError on a malformed one."""
    words = line.split()
    if len(words) >= 4 and words[1:3] == ["overflow", "dropped"]:
        return int(words[3])
    return None


def parse_lines(data: bytes, name: str) -> PluginOutput:
    """The reference parser, one line at a time (the fallback of :func:`parse_fast`)."""

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

    head = parse_header(lines[0])
    if head is None:
        raise fail(1, f"not a slicert plugin file (header {lines[0][:60]!r})")
    plugin_version, cycle_model = head

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
            try:
                got = overflow_count(line)
            except ValueError:
                raise fail(lineno, f"bad overflow line {line!r}") from None
            dropped = dropped if got is None else got
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
            if eid > ev.MAX_EVENT_ID or payload > _MAX_PAYLOAD:
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
    return PluginOutput(plugin_version, cycle_model, EventTable.from_events(events), totals,
                        dropped, comments)
