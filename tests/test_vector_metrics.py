"""The numpy event path against the per-event one it replaced (tests/support/
reference_metrics.py), on generated event logs: parser (fast path and its line-parser
fallback), metrics, per-layer metrics, the trace writer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import reference_metrics as ref

from slicert_ops.network import events as nev
from slicert_ops.rundir import dumps_trace
from slicert_ops.sim import events as ev
from slicert_ops.sim import metrics as vm
from slicert_ops.sim.eventtable import Event, EventTable
from slicert_ops.sim.plugin_file import parse_fast, parse_lines, read_plugin_output
from slicert_ops.sim.trace import TraceEvents, build_trace, compute_metrics
from slicert_ops.sim.trace_json import events_json

IRQ = ev.IRQ_LOAD_EXCEPTION
HEADER = "# slicert-plugin 2.1.0 cycle-model cm3-v2\n# trace_base 0x3e000 ws 0 unclassified 0\n"
# ids a generated log draws from (weights: the common ones more often); 20 and 127 are
# outside the contract's table (named event_<id>)
BODY_IDS = [ev.TILE_END] * 8 + [ev.SLICE_EXPIRE, ev.YIELD, ev.PENDSV_ENTER, ev.PENDSV_EXIT,
                                ev.PENDSV_EXIT, ev.IRQ_ENTER, ev.IRQ_EXIT, ev.IRQ_EXIT,
                                ev.TICK_ENTER, ev.TICK_EXIT, ev.RT_RELEASE, ev.RT_START,
                                ev.RT_END, ev.EXC_ENTRY, ev.EXC_ENTRY, ev.KERNEL_START,
                                ev.KERNEL_END, ev.CAL_START, ev.CAL_END, 20, 127]


def generated(seed: int, n: int = 400, layers: int = 4) -> list[Event]:
    """A random, well-stamped event log: calibration, a kernel window holding ``layers``
    layer windows, and every kind of event in between in any order (unmatched exits,
    nested entries, jobs that never end...)."""
    rnd = random.Random(seed)
    c = i = 0
    out: list[Event] = []

    def add(eid: int, payload: int = 0, pend: int = -1) -> None:
        nonlocal c, i
        c += rnd.choice((0, 1, 3, 7, 20, 150))
        i += rnd.choice((0, 1, 2, 5))
        if eid == ev.EXC_ENTRY:
            exc = rnd.choice((IRQ, IRQ, IRQ, 15, 11))
            pend = -1 if rnd.random() < 0.1 else max(0, c - rnd.randint(0, 60))
            out.append(Event(eid, c, i, exc, pend))
        else:
            out.append(Event(eid, c, i, payload))

    def body(k: int) -> None:
        for _ in range(k):
            eid = rnd.choice(BODY_IDS)
            payload = {ev.PENDSV_EXIT: rnd.choice((0, 0, 1, 2)),
                       ev.RT_RELEASE: rnd.randint(0, 6), ev.RT_START: rnd.randint(0, 6),
                       ev.RT_END: rnd.randint(0, 6), ev.CAL_START: rnd.choice((0, 4, 64)),
                       20: rnd.randint(0, 0xFFFFFFFF)}.get(eid, 0)
            add(eid, payload)

    body(rnd.randint(0, 5))
    add(ev.CAL_START, rnd.choice((0, 64)))
    body(rnd.randint(0, 5))
    add(ev.CAL_END)
    body(rnd.randint(0, 10))
    add(ev.KERNEL_START)
    for op in range(layers):
        body(rnd.randint(0, 10))
        add(ev.LAYER_START, op)
        body(rnd.randint(0, n // layers))
        if rnd.random() < 0.9:  # now and then a layer never ends
            add(ev.LAYER_END, op)
    body(rnd.randint(0, 10))
    add(ev.KERNEL_END)
    body(rnd.randint(0, 20))
    return out


def plugin_text(events: list[Event], totals: tuple[int, int], comments: str = "") -> str:
    lines = []
    for e in events:
        if e.id == ev.EXC_ENTRY:
            pend = "-" if e.pend < 0 else str(e.pend)
            lines.append(f"X {e.payload} {pend} {e.cycles} {e.insns}\n")
        else:
            lines.append(f"E {e.id} {e.cycles} {e.insns} {e.payload}\n")
    return HEADER + "".join(lines) + comments + f"T {totals[0]} {totals[1]}\n"


SEEDS = range(60)


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_match_the_per_event_implementation(seed: int) -> None:
    evs = generated(seed)
    totals = {"cycles": evs[-1].cycles + seed, "instructions": evs[-1].insns}
    sizes = {"text": 10, "data": 2, "bss": 3}
    for deadline in (1, 300, 10**6):
        want = ref.compute_metrics(evs, totals, sizes, True, deadline_cycles=deadline)
        got = compute_metrics(EventTable.from_events(evs), totals, sizes, True,
                              deadline_cycles=deadline)
        assert got == want
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    # another board's IRQ-load exception
    assert compute_metrics(evs, totals, sizes, False, deadline_cycles=50, irq_exception=15) \
        == ref.compute_metrics(evs, totals, sizes, False, deadline_cycles=50,
                               irq_exception=15)


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_metrics_match_the_per_layer_rescan(seed: int) -> None:
    evs = generated(seed, layers=5)
    net = SimpleNamespace(ops=[SimpleNamespace(index=k, label=f"l{k}", type="conv2d",
                                               layer=SimpleNamespace(macs=1000 * (k + 1)))
                               for k in range(6)])  # op 5 has no window: "missing"
    wins = ref.layer_windows(evs)
    assert nev.layer_windows(evs) == wins
    for deadline in (None, 200):
        rows = nev.layer_metrics(net, EventTable.from_events(evs), deadline_cycles=deadline)
        assert rows[5] == {"op": 5, "layer": "l5", "type": "conv2d", "missing": True}
        for row in rows:
            if row.get("missing"):
                assert row["op"] not in wins
                continue
            s, e = wins[row["op"]]
            want = ref.layer_window_metrics(evs, s, e, deadline_cycles=deadline)
            assert {k: row[k] for k in nev.LAYER_METRICS} == \
                {k: want[k] for k in nev.LAYER_METRICS}
            assert row["max_granule_cycles"] == ref.max_granule(evs[s:e + 1])
            assert row["macs_per_cycle"] == round(row["macs"] / max(1, want["kernel_cycles"]),
                                                  4)


@pytest.mark.parametrize("seed", range(20))
def test_fast_parser_matches_the_line_parser(seed: int, tmp_path: Path) -> None:
    evs = generated(seed)
    comments = "# overflow dropped 3 events after 9\n" if seed % 3 == 0 else ""
    data = plugin_text(evs, (evs[-1].cycles + 5, evs[-1].insns + 1), comments).encode()
    fast = parse_fast(data)
    assert fast is not None
    assert fast == parse_lines(data, "x")
    assert fast.events == evs and fast.dropped_events == (3 if comments else 0)
    path = tmp_path / "plugin_events.txt"
    path.write_bytes(data)
    assert read_plugin_output(path) == fast


GOOD = HEADER + "E 14 10 5 0\nE 0 100 60 0\nX 35 120 140 80\nX 14 - 160 95\nE 1 200 120 0\n" \
    "T 250 150\n"


@pytest.mark.parametrize("odd, fast_takes_it", [
    (GOOD.replace("E 0 100 60 0", "E 0 +100 60 0"), False),    # int() takes a sign
    (GOOD.replace("E 0 100 60 0", "E 0 0100 60 0"), True),     # and leading zeros
    (GOOD.replace("E 0 100 60 0", "E 0 100 60 0\r"), False),   # and a CR
    (GOOD.replace("X 35 120", "X 35 -1"), False),              # "-1" spelt out
    (GOOD.replace("E 0 100", "# a comment between events\nE 0 100"), False),
    (GOOD.replace("E 0 100 60 0", "E 0 100 60 1_000"), False),
    (GOOD.replace("E 14 10 5 0", "E 14 10 5 00000000000000000000000000000"), False),
])
def test_odd_but_valid_input_falls_back_to_the_line_parser(odd: str, fast_takes_it: bool,
                                                           tmp_path: Path) -> None:
    data = odd.encode()
    fast = parse_fast(data)
    assert (fast is not None) == fast_takes_it
    assert fast is None or fast == parse_lines(data, "x")
    path = tmp_path / "plugin_events.txt"
    path.write_bytes(data)
    assert read_plugin_output(path) == parse_lines(data, str(path))


@pytest.mark.parametrize("bad", [
    GOOD.replace("E 0 100 60 0", "E 0 1x0 60 0"),
    GOOD.replace("X 35 120 140 80", "X 35 150 140 80"),        # assertion after the entry
    GOOD.replace("E 1 200", "E 1 20"),                         # backwards
    GOOD.replace("E 1 200", "E 200 200"),                      # id out of range
    GOOD.replace("E 1 200 120 0", "E 1 200 120 4294967296"),   # payload out of range
    GOOD.replace("T 250 150", "T 250 10"),                     # totals too small
    GOOD + "E 2 300 200 0\n",                                  # after the totals
    GOOD.replace("T 250 150\n", ""),
    GOOD[:-1],
    GOOD.replace("E 0 100 60 0", "E 0 100 60 0 7"),
    GOOD.replace("E 0 100 60 0", "E 0 100  60 0"),
    GOOD.replace("E 0 100 60 0", "E 0 100 60 99999999999999999999"),
    GOOD.replace("# trace_base", "# overflow dropped many"),
    "# not a header\n" + GOOD,
])
def test_corrupt_input_is_left_to_the_line_parser(bad: str, tmp_path: Path) -> None:
    """The fast path never accepts what the line parser rejects: the error (file, line,
    cause) is the line parser's."""
    data = bad.encode()
    assert parse_fast(data) is None
    path = tmp_path / "plugin_events.txt"
    path.write_bytes(data)
    with pytest.raises(Exception) as fast_err:
        read_plugin_output(path)
    with pytest.raises(Exception) as line_err:
        parse_lines(data, str(path))
    assert str(fast_err.value) == str(line_err.value)


def test_no_events_and_only_comments() -> None:
    data = (HEADER + "# overflow dropped 0 events after 0\nT 5 3\n").encode()
    out = parse_fast(data)
    assert out == parse_lines(data, "x")
    assert out is not None and len(out.events) == 0 and out.totals == {"cycles": 5,
                                                                       "instructions": 3}


@pytest.mark.parametrize("seed", range(10))
def test_trace_writer_matches_json(seed: int) -> None:
    evs = generated(seed)
    table = EventTable.from_events(evs)
    want = ",\n".join(json.dumps(e.to_json(), sort_keys=True) for e in evs)
    assert events_json(table) == want
    assert events_json(EventTable.empty()) == ""
    m = compute_metrics(evs, {"cycles": 10**7, "instructions": 10**7}, {}, True,
                        deadline_cycles=100)
    kw = dict(candidate_id="c", repeat=0, seed=0, exit_code=0, sizes={}, metrics=m)
    fast = build_trace(table, {"cycles": 10**7, "instructions": 10**7}, **kw)
    slow = build_trace(evs, {"cycles": 10**7, "instructions": 10**7}, **kw)
    assert isinstance(fast["events"], TraceEvents) and isinstance(slow["events"], list)
    assert fast["events"] == slow["events"]
    assert dumps_trace(fast) == dumps_trace(slow)
    assert json.loads(dumps_trace(fast)) == json.loads(json.dumps(slow))


def test_event_table_is_a_sequence_of_events() -> None:
    evs = generated(1, n=40)
    t = EventTable.from_events(evs)
    assert len(t) == len(evs) and list(t) == evs and t == evs
    assert t[3] == evs[3] and t[-1] == evs[-1] and t[2:5] == evs[2:5]
    assert EventTable.from_events([e.to_json() for e in evs]) == t
    assert t != evs[:-1] and EventTable.empty() == []
    assert vm.kernel_window(vm.EventIndex(t)) == ref.kernel_window(evs)


def test_clamped_depth_is_the_sequential_one() -> None:
    rnd = random.Random(7)
    steps = [rnd.choice((-1, -1, 0, 1)) for _ in range(500)]
    d, want = 0, []
    for x in steps:
        d = max(0, d + x)
        want.append(d)
    import numpy as np

    assert vm.clamped_depth(np.array(steps)).tolist() == want


@pytest.mark.parametrize("seed", range(30))
def test_events_frame_columns_match_rows(seed: int) -> None:
    """The validation's events frame, column-wise for well-formed events, is the row-wise
    one (every column, dtype and value)."""
    import pandas as pd

    from slicert_ops.validate import frames

    raw = [e.to_json() for e in generated(seed, n=150)]
    got = frames._events_frame_columns(raw)
    assert got is not None
    pd.testing.assert_frame_equal(got, frames._events_frame_rows(raw), check_exact=True)
    pd.testing.assert_frame_equal(frames.events_frame({"events": raw}), got)
    # anything irregular goes row by row
    for odd in ([*raw[:5], None], [*raw[:5], dict(raw[5], cycles=None)],
                [*raw[:5], dict(raw[5], payload=True)], [dict(raw[0], type=7)]):
        assert frames._events_frame_columns(odd) is None
        pd.testing.assert_frame_equal(frames.events_frame({"events": odd}),
                                      frames._events_frame_rows(odd))
