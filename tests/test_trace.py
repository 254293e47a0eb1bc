"""Plugin-file parsing, metrics, trace JSON and cycles.txt (pure Python, synthetic events)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev
from slicert_ops.sim.cycles_txt import format_cycles_txt, parse_cycles_txt
from slicert_ops.sim.qemu import build_command, parse_output_frame
from slicert_ops.sim.trace import (
    FLOAT_METRICS,
    METRIC_NAMES,
    Event,
    as_event,
    build_trace,
    compute_metrics,
    parse_plugin_output,
    read_plugin_output,
)

HEADER = "# slicert-plugin 2.1.0 cycle-model cm3-v2\n"
GOOD = HEADER + (
    "# trace_base 0x3e000 ws 0 unclassified 0\n"
    "E 14 10 5 0\n"
    "E 0 100 60 0\n"
    "X 35 120 140 80\n"
    "E 8 150 90 3735928559\n"
    "X 14 - 160 95\n"
    "E 1 200 120 0\n"
    "T 250 150\n"
)


def _write(tmp_path: Path, text: str | bytes, name: str = "plugin_events.txt") -> Path:
    p = tmp_path / name
    if isinstance(text, str):
        p.write_text(text)
    else:
        p.write_bytes(text)
    return p


# ----------------------------------------------------------------------------- parsing


def test_parse_good_file(tmp_path: Path) -> None:
    events, totals = parse_plugin_output(_write(tmp_path, GOOD))
    assert events == [Event(14, 10, 5, 0), Event(0, 100, 60, 0),
                      Event(ev.EXC_ENTRY, 140, 80, 35, 120),
                      Event(8, 150, 90, 0xDEADBEEF), Event(ev.EXC_ENTRY, 160, 95, 14, -1),
                      Event(1, 200, 120, 0)]
    assert totals == {"cycles": 250, "instructions": 150}
    assert [e.type for e in events] == ["boot", "kernel_start", "exc_entry", "rt_release",
                                        "exc_entry", "kernel_end"]


@pytest.mark.parametrize("text, line, words", [
    (GOOD.replace("E 0 100 60 0", "E 0 1x0 60 0"), 4, "corrupt line"),
    (GOOD.replace("E 0 100 60 0", "Y 0 100 60 0"), 4, "corrupt line"),
    (GOOD.replace("X 35 120 140 80", "X 35 150 140 80"), 5, "backwards"),
    (GOOD.replace("X 35 120 140 80", "X 35 -5 140 80"), 5, "negative"),
    (GOOD.replace("E 0 100 60 0", "E 0 100 60"), 4, "corrupt line"),
    (GOOD.replace("E 8 150 90", "E 8 50 90"), 6, "backwards"),
    (GOOD.replace("E 8 150", "E 200 150"), 6, "out of range"),
    (GOOD.replace("T 250 150\n", ""), 9, "no 'T cycles insns' line"),
    (GOOD[:-3], 9, "no newline"),
    (GOOD + "E 2 300 200 0\n", 10, "after the totals"),
    ("hello\n" + GOOD, 1, "not a slicert plugin file"),
    ("", 1, "empty"),
    (GOOD.replace("T 250 150", "T 150 150"), 9, "totals smaller"),
])
def test_corrupt_or_truncated_file_names_file_and_line(tmp_path: Path, text: str, line: int,
                                                       words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(StageError) as info:
        parse_plugin_output(path)
    msg = str(info.value)
    assert msg.startswith(f"parse: {path}:{line}: "), msg
    assert words in msg


def test_binary_garbage_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.encode()[:60] + b"\xff\x00garbage\n")
    with pytest.raises(StageError, match=r":2: corrupt plugin output \(non-ASCII"):
        parse_plugin_output(path)
    with pytest.raises(StageError, match="plugin output missing"):
        parse_plugin_output(tmp_path / "absent.txt")


def test_cycle_model_mismatch_and_overflow(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("cm3-v2", "cm3-v0"))
    with pytest.raises(StageError, match="cycle model 'cm3-v0', expected 'cm3-v2'"):
        parse_plugin_output(path)
    assert parse_plugin_output(path, cycle_model=None)[1]["cycles"] == 250
    over = GOOD.replace("T 250", "# overflow dropped 12 events after 4\nT 250")
    path = _write(tmp_path, over, "over.txt")
    with pytest.raises(StageError, match="overflowed, 12 events dropped"):
        parse_plugin_output(path)
    assert len(parse_plugin_output(path, allow_overflow=True)[0]) == 6
    assert read_plugin_output(path).dropped_events == 12


# ----------------------------------------------------------------------------- metrics

E = ev.EVENT_IDS


def _scenario(with_rt_end: bool = True) -> list[Event]:
    rows = [
        ("cal_start", 100, 50, 4),
        ("tile_end", 110, 55, 0), ("tile_end", 120, 60, 0),
        ("tile_end", 130, 65, 0), ("tile_end", 140, 70, 0),
        ("cal_end", 180, 90, 0),
        ("kernel_start", 1000, 600, 0),
        ("tile_end", 1100, 660, 0),
        ("slice_expire", 1200, 720, 0),
        ("yield", 1210, 725, 1),
        ("pendsv_enter", 1220, 730, 0),
        ("pendsv_exit", 1260, 750, 0),
        ("tile_end", 1300, 780, 0),
        ("exc_entry", 1390, 836, ev.IRQ_LOAD_EXCEPTION, 1362),
        ("irq_enter", 1400, 840, 5),
        ("rt_release", 1410, 845, 0),
        ("irq_exit", 1420, 850, 0),
        ("tile_end", 1450, 870, 0),
        ("yield", 1460, 875, 2),
        ("pendsv_enter", 1470, 880, 0),
        ("pendsv_exit", 1500, 900, 1),
        ("rt_start", 1510, 905, 0),
        ("exc_entry", 1590, 955, ev.IRQ_LOAD_EXCEPTION, 1578),
        ("exc_entry", 1595, 957, 15, 1590),
        ("irq_enter", 1600, 960, 3),
        ("irq_exit", 1620, 970, 0),
        ("rt_end", 1700, 1020, 0),
        ("pendsv_enter", 1710, 1025, 0),
        ("pendsv_exit", 1740, 1045, 0),
        ("tile_end", 1800, 1080, 0),
        ("kernel_end", 2000, 1200, 0),
        ("output_ready", 2050, 1230, 0),
    ]
    if not with_rt_end:
        rows = [r for r in rows if r[0] != "rt_end"]
    return [Event(E[r[0]], *r[1:]) for r in rows]


TOTALS = {"cycles": 2100, "instructions": 1260}
SIZES = {"text_bytes": 4096, "data_bytes": 16, "bss_bytes": 512}


def test_metrics_on_synthetic_events() -> None:
    m = compute_metrics(_scenario(), TOTALS, SIZES, True, deadline_cycles=340)
    assert tuple(m) == METRIC_NAMES
    assert m["wall_cycles"] == 1000 and m["instructions"] == 600
    # kernel time = window minus PendSV, IRQ and RT (task 1 from 1500 to the 1740 switch)
    assert m["kernel_cycles"] == 670 and m["kernel_instructions"] == 405
    assert m["yield_checks"] == 4                   # tile_ends inside the window only
    assert m["yield_check_cycles"] == 20            # (180 - 100) / 4
    assert m["yield_overhead_cycles"] == 80
    assert m["slices"] == 1
    assert m["pendsv_count"] == 3
    assert m["pendsv_overhead_mean_cycles"] == 33.333
    assert m["pendsv_overhead_max_cycles"] == 40
    # handler start - assertion of the IRQ-load exception (not the SysTick's, 15)
    assert m["irq_count"] == 2
    assert m["irq_latency_min_cycles"] == 12                # 1590 - 1578
    assert m["irq_latency_max_cycles"] == 28                # 1390 - 1362
    assert m["irq_latency_p99_cycles"] == 28
    assert m["irq_latency_mean_cycles"] == 20.0
    assert m["rt_releases"] == 1 and m["rt_jobs"] == 1
    # from the assertion of the IRQ that released the job
    assert m["max_preemption_latency_cycles"] == 148        # 1510 - 1362
    assert m["mean_preemption_latency_cycles"] == 148.0
    assert m["deadline_misses"] == 0                        # 1700 - 1362 = 338 <= 340
    assert (m["text_bytes"], m["data_bytes"], m["bss_bytes"]) == (4096, 16, 512)
    assert m["correct"] == 1
    for name, value in m.items():
        assert type(value) is (float if name in FLOAT_METRICS else int), name
    assert FLOAT_METRICS == {n for n in METRIC_NAMES if "mean" in n}


def test_deadlines() -> None:
    evs = _scenario()
    # rt_end - assertion = 1700 - 1362 = 338 cycles
    assert compute_metrics(evs, TOTALS, SIZES, True, deadline_cycles=337)["deadline_misses"] == 1
    assert compute_metrics(evs, TOTALS, SIZES, True, deadline_cycles=338)["deadline_misses"] == 0
    # a job that never ends misses only if the trace runs past its deadline
    no_end = _scenario(with_rt_end=False)
    assert compute_metrics(no_end, TOTALS, SIZES, True,
                           deadline_cycles=300)["deadline_misses"] == 1
    assert compute_metrics(no_end, TOTALS, SIZES, True,
                           deadline_cycles=10_000)["deadline_misses"] == 0
    with pytest.raises(ValueError, match="deadline"):
        compute_metrics(evs, TOTALS, SIZES, True)


def test_metrics_without_irq_load_are_zero() -> None:
    evs = [Event(E["kernel_start"], 10, 5), Event(E["tile_end"], 20, 10),
           Event(E["kernel_end"], 110, 65)]
    m = compute_metrics(evs, {"cycles": 120, "instructions": 70}, {}, False)
    assert m["kernel_cycles"] == m["wall_cycles"] == 100
    assert m["yield_checks"] == 1 and m["yield_check_cycles"] == 0
    for name in METRIC_NAMES:
        if name.startswith(("irq_", "rt_", "pendsv_")) or "preemption" in name \
                or name == "deadline_misses":
            assert m[name] == 0, name
    assert m["correct"] == 0


def test_missing_kernel_window_is_a_clear_error() -> None:
    with pytest.raises(StageError, match="no kernel_start"):
        compute_metrics([Event(E["boot"], 1, 1)], TOTALS, SIZES, True)
    with pytest.raises(StageError, match="no kernel_end"):
        compute_metrics([Event(E["kernel_start"], 1, 1)], TOTALS, SIZES, True)


def test_p99_nearest_rank() -> None:
    evs = [Event(E["kernel_start"], 0, 0)]
    evs += [Event(ev.EXC_ENTRY, 10 + 2 * i, 10 + i, ev.IRQ_LOAD_EXCEPTION, 10 + i - 1)
            for i in range(200)]
    evs += [Event(E["kernel_end"], 1000, 1000)]
    m = compute_metrics(evs, {"cycles": 1000, "instructions": 1000}, {}, True)
    assert m["irq_count"] == 200
    assert (m["irq_latency_min_cycles"], m["irq_latency_p99_cycles"],
            m["irq_latency_max_cycles"]) == (1, 198, 200)
    assert m["irq_latency_mean_cycles"] == 100.5


# ----------------------------------------------------------------------------- trace JSON


def test_build_trace_schema_and_roundtrip() -> None:
    evs = _scenario()
    m = compute_metrics(evs, TOTALS, SIZES, True, deadline_cycles=300)
    t = build_trace(evs, TOTALS, candidate_id="0123456789abcdef", repeat=1, seed=1,
                    exit_code=0, sizes=SIZES, metrics=m, cpu_mhz=80)
    assert list(t) == ["schema", "cycle_model", "board", "cpu_mhz", "units", "candidate_id",
                       "repeat", "seed", "exit_code", "totals", "events", "metrics"]
    assert t["schema"] == "slicert-trace/1" and t["cycle_model"] == "cm3-v2"
    assert t["board"] == "lm3s6965evb" and t["cpu_mhz"] == 80
    assert set(t["units"]) == {"cycles", "us"}
    exc = next(e for e in t["events"] if e["type"] == "exc_entry")
    assert exc == {"type": "exc_entry", "cycles": 1390, "insns": 836,
                   "payload": ev.IRQ_LOAD_EXCEPTION, "pend_cycles": 1362}
    assert t["totals"] == {"cycles": 2100, "instructions": 1260}
    assert t["events"][0] == {"type": "cal_start", "cycles": 100, "insns": 50, "payload": 4}
    assert t["metrics"] == m
    again = json.loads(json.dumps(t))
    assert [as_event(e) for e in again["events"]] == evs
    # metrics computed in place when not given; an unchecked output is not correct
    t2 = build_trace(evs, TOTALS, candidate_id="x", repeat=0, seed=0, exit_code=0,
                     sizes=SIZES, deadline_cycles=1000)
    assert t2["metrics"]["correct"] == 0 and t2["metrics"]["wall_cycles"] == 1000


def test_unknown_event_ids_are_named() -> None:
    assert ev.event_name(20) == "event_20" and ev.event_id("event_20") == 20
    assert as_event({"type": "event_127", "cycles": 1, "insns": 1, "payload": 0}).id == 127
    with pytest.raises(KeyError):
        ev.event_id("nonsense")
    assert ev.stub_address("output_ready") == 0x3E01E
    assert ev.lane_address(3, 0xFF) == 0x3E000 + 0x100 + 3 * 0x200 + 0x1FE
    assert ev.lane_address(3, 0xFF) < ev.TRACE_BASE + ev.TRACE_SPAN


def test_events_mirror_contract() -> None:
    contract = (Path(__file__).resolve().parents[1] / "docs" / "contracts.md").read_text()
    for eid, name in ev.EVENT_NAMES.items():
        assert f"| {eid} | `{name}` |" in contract, name
    for name in METRIC_NAMES:
        assert f"`{name}`" in contract, name


# ----------------------------------------------------------------------------- cycles.txt


def test_cycles_txt_format() -> None:
    m = compute_metrics(_scenario(), TOTALS, SIZES, True, deadline_cycles=300)
    text = format_cycles_txt(m)
    lines = text.splitlines()
    assert len(lines) == len(METRIC_NAMES)
    assert lines == sorted(lines)
    assert "kernel_cycles 670" in lines
    assert "pendsv_overhead_mean_cycles 33.333" in lines
    assert "mean_preemption_latency_cycles 148.000" in lines
    assert text.endswith("\n") and format_cycles_txt(dict(reversed(m.items()))) == text
    back = parse_cycles_txt(text)
    assert back == m
    assert format_cycles_txt({"b": True, "a": 1.5}) == "a 1.500\nb 1\n"
    with pytest.raises(ValueError):
        format_cycles_txt({"x": float("nan")})
    with pytest.raises(ValueError):
        format_cycles_txt({"bad name": 1})


# ----------------------------------------------------------------------------- QEMU glue


def test_output_frame() -> None:
    assert parse_output_frame(b"noise\nSLICERT-OUT 00000003\nabcrest") == b"abc"
    assert parse_output_frame(b"SLICERT-OUT 00000000\n") == b""
    for bad, msg in ((b"nothing", "no 'SLICERT-OUT'"),
                     (b"SLICERT-OUT 0000000g\nabc", "bad SLICERT-OUT length"),
                     (b"SLICERT-OUT 00000003 abc", "bad SLICERT-OUT header"),
                     (b"SLICERT-OUT 00000010\nabc", "truncated SLICERT-OUT frame: 3 of 16")):
        with pytest.raises(ValueError, match=msg):
            parse_output_frame(bad)


def test_build_command_is_a_list() -> None:
    cmd = build_command("/x/fw.elf", seed=3, plugin="/p/lib.so", plugin_out="/o,dd/ev.txt",
                        ws=1, qemu="/q/qemu-system-arm")
    assert cmd[0] == "/q/qemu-system-arm"
    # the plugin is the clock: no -icount, one TCG thread
    assert "-icount" not in cmd and cmd[cmd.index("-accel") + 1] == "tcg,thread=single"
    assert cmd[cmd.index("-append") + 1] == "seed=3"
    assert cmd[cmd.index("-kernel") + 1] == "/x/fw.elf"
    assert cmd[cmd.index("-plugin") + 1] == ("/p/lib.so,trace_base=0x3e000,out=/o,,dd/ev.txt,"
                                             "ws=1")
    for flag in ("-M", "-display", "-serial", "-monitor", "-semihosting-config"):
        assert flag in cmd
    raw = build_command("/x/fw.elf", seed=0, plugin=None)
    assert "-plugin" not in raw and raw[raw.index("-icount") + 1] == "shift=0,align=off,sleep=off"
