"""The QEMU cycle plugin on a hand-written test firmware (real gcc + QEMU).

The firmware (tests/support/plugin_fw) annotates every instruction executed between two
event stubs with its expected cost: ``@ cost=C [br|cbr] [n=K]`` (br: taken-branch refill,
gets +ws; cbr: conditional branch, averaged refill; n: executions, ``n=LOOP`` = the loop
count). The tests sum those annotations and compare with the plugin's stamps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev
from slicert_ops.sim.qemu import SimResult, build_command, elf_symbols, run_firmware
from slicert_ops.sim.trace import PluginOutput, read_plugin_output

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
FW_DIR = ROOT / "tests" / "support" / "plugin_fw"
PLUGIN = ROOT / "build" / "qemu" / "libslicert_cycles.so"
CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
LOOP_N = 1000
PIPE_REFILL = 2
EXC_ENTRY = 12


def _need_tools() -> None:
    for tool in (CC, QEMU, "gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed: run `make setup`")


@pytest.fixture(scope="session")
def plugin() -> Path:
    _need_tools()
    subprocess.run(["sh", str(ROOT / "qemu" / "build.sh")], check=True)
    assert PLUGIN.is_file()
    return PLUGIN


def _build(out: Path, **defines: int | bool) -> Path:
    args = [CC, "-mcpu=cortex-m3", "-mthumb", "-O2", "-g", "-ffreestanding", "-nostdlib",
            "-nostartfiles", "-Wall", "-Wextra", "-Werror", "-T", str(FW_DIR / "link.ld")]
    for key, value in defines.items():
        args.append(f"-D{key}" if value is True else f"-D{key}={value}")
    args += ["-o", str(out), str(FW_DIR / "fw.S"), str(FW_DIR / "main.c")]
    subprocess.run(args, check=True)
    return out


@pytest.fixture(scope="session")
def fw(tmp_path_factory: pytest.TempPathFactory, plugin: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("plugin_fw")
    return {
        "main": _build(d / "main.elf", FW_LOOP_N=LOOP_N),
        "loop10": _build(d / "loop10.elf", FW_LOOP_N=10),
        "hang": _build(d / "hang.elf", FW_HANG=True),
        "exit3": _build(d / "exit3.elf", FW_EXIT_CODE=3),
    }


def _handler(elf: Path) -> int:
    return elf_symbols(elf)["SysTick_Handler"]


def _run(elf: Path, out: Path, *, seed: int = 7, handlers: list[int] | None = None,
         ws: int = 0, timeout_s: float = 30) -> SimResult:
    return run_firmware(elf, seed=seed, handlers=[] if handlers is None else handlers,
                        out_dir=out, timeout_s=timeout_s, plugin=PLUGIN, ws=ws)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def _expected(region: str, *, ws: int = 0, loop_n: int = LOOP_N) -> tuple[int, int]:
    """(cycles, instructions) between the two events around ``region`` in fw.S."""
    text = (FW_DIR / "fw.S").read_text()
    body = text.split(f"@ {region}_BEGIN")[1].split(f"@ {region}_END")[0]
    refill = PIPE_REFILL + ws
    cycles = insns = 0
    for line in body.splitlines():
        if "@ cost=" not in line:
            continue
        toks = line.split("@ cost=")[1].split()
        cost = int(toks[0])
        if "br" in toks[1:]:
            cost += ws
        if "cbr" in toks[1:]:
            cost = 1 + (refill + 1) // 2
        n = 1
        for t in toks[1:]:
            if t.startswith("n="):
                n = loop_n if t[2:] == "LOOP" else int(t[2:])
        cycles += cost * n
        insns += n
    # the first stub's own `bx lr` executes after its stamp: a taken branch
    return cycles + 1 + refill, insns + 1


def _pair(res: SimResult, first: int, second: int):
    ids = [e.id for e in res.events]
    a = res.events[ids.index(first)]
    b = res.events[ids.index(second)]
    return b.cycles - a.cycles, b.insns - a.insns


def test_known_loop_counts_exact_instructions(fw: dict[str, Path], tmp_path: Path) -> None:
    for name, n in (("main", LOOP_N), ("loop10", 10)):
        res = _run(fw[name], tmp_path / name).raise_for_status()
        cycles, insns = _pair(res, ev.KERNEL_START, ev.KERNEL_END)
        exp_cycles, exp_insns = _expected("LOOP", loop_n=n)
        assert insns == exp_insns == 6 * n + 4          # one MMIO load per iteration
        assert cycles == exp_cycles == 9 * n + 8


def test_instruction_mix_costs_match_table(fw: dict[str, Path], tmp_path: Path) -> None:
    for ws in (0, 2):
        res = _run(fw["main"], tmp_path / f"ws{ws}", ws=ws).raise_for_status()
        assert _pair(res, 20, 21) == _expected("MIX", ws=ws)
        assert _pair(res, ev.KERNEL_START, ev.KERNEL_END) == _expected("LOOP", ws=ws)
    head = read_plugin_output(tmp_path / "ws0" / "plugin_events.txt")
    assert head.plugin_version == ev.PLUGIN_VERSION
    assert head.cycle_model == ev.CYCLE_MODEL_VERSION
    # every instruction gcc emitted for the firmware is in the table
    assert any("unclassified 0" in c for c in head.comments), head.comments


def test_events_payloads_seed_and_output(fw: dict[str, Path], tmp_path: Path) -> None:
    res = _run(fw["main"], tmp_path, seed=123456789).raise_for_status()
    assert res.exit_code == 0 and not res.timed_out
    ids = [e.id for e in res.events]
    n_irq = ids.count(ev.IRQ_ENTER)
    assert n_irq == 5
    assert ids == ([ev.BOOT, ev.CAL_START, ev.CAL_END, ev.KERNEL_START, ev.KERNEL_END, 20, 21]
                   + [ev.IRQ_ENTER, ev.IRQ_EXIT] * n_irq
                   + [ev.RT_RELEASE, ev.RT_START, ev.RT_END, 127, ev.OUTPUT_READY])
    payload = {e.id: e.payload for e in res.events}
    assert payload[ev.CAL_START] == 123456789          # -append seed=N reached the guest
    assert payload[ev.RT_RELEASE] == 0xDEADBEEF
    assert payload[ev.RT_START] == 0                    # pending payload was consumed
    assert payload[ev.RT_END] == 0x00A50000
    assert payload[127] == 0x80000001
    assert all(e.payload == 0 for e in res.events if e.id in (ev.BOOT, ev.IRQ_ENTER))
    stamps = [(e.cycles, e.insns) for e in res.events]
    assert stamps == sorted(stamps)
    assert res.totals["instructions"] >= res.events[-1].insns
    # SysTick fires periodically in virtual time: equal instruction spacing
    irq = [e.insns for e in res.events if e.id == ev.IRQ_ENTER]
    assert len({b - a for a, b in zip(irq, irq[1:], strict=False)}) == 1
    words = [int.from_bytes(res.output[i:i + 4], "little") for i in range(0, 16, 4)]
    assert words == [LOOP_N * LOOP_N, words[1], 5, 123456789]
    assert res.raw_files["plugin_events.txt"].is_file()


def test_handler_entry_cost(fw: dict[str, Path], tmp_path: Path) -> None:
    elf = fw["main"]
    plain = _run(elf, tmp_path / "plain").raise_for_status()
    with_h = _run(elf, tmp_path / "handler", handlers=[_handler(elf)]).raise_for_status()
    n_irq = sum(1 for e in plain.events if e.id == ev.IRQ_ENTER)
    assert n_irq == 5
    assert with_h.totals["instructions"] == plain.totals["instructions"]
    assert with_h.totals["cycles"] - plain.totals["cycles"] == EXC_ENTRY * n_irq
    assert [e.id for e in with_h.events] == [e.id for e in plain.events]
    # the entry cost lands on the handler's first instruction, before irq_enter's stamp
    first = next(i for i, e in enumerate(plain.events) if e.id == ev.IRQ_ENTER)
    assert with_h.events[first].cycles - plain.events[first].cycles == EXC_ENTRY
    assert with_h.events[first - 1].cycles == plain.events[first - 1].cycles


def test_two_runs_byte_identical(fw: dict[str, Path], tmp_path: Path) -> None:
    h = [_handler(fw["main"])]
    a = _run(fw["main"], tmp_path / "a", handlers=h, ws=1).raise_for_status()
    b = _run(fw["main"], tmp_path / "b", handlers=h, ws=1).raise_for_status()
    fa = (tmp_path / "a" / "plugin_events.txt").read_bytes()
    fb = (tmp_path / "b" / "plugin_events.txt").read_bytes()
    assert fa == fb and fa.startswith(b"# slicert-plugin ")
    assert a.output == b.output and a.stdout == b.stdout


def test_hung_firmware_is_killed_at_timeout(fw: dict[str, Path], tmp_path: Path) -> None:
    t0 = time.monotonic()
    res = _run(fw["hang"], tmp_path, timeout_s=1.0)
    elapsed = time.monotonic() - t0
    assert res.timed_out and res.exit_code is None and res.output is None
    assert elapsed < 1.0 + 3.0 + 2.0
    # SIGTERM lets QEMU run the plugin's exit callback: the events before the hang survive
    assert [e.id for e in res.events] == [ev.BOOT, ev.CAL_START, ev.CAL_END]
    assert res.totals["instructions"] > 1_000_000
    with pytest.raises(StageError, match=r"run: QEMU timed out after 1s"):
        res.raise_for_status()
    # no QEMU is left running that firmware
    assert not _processes_mentioning(str(fw["hang"]))


def test_exit_code_reported(fw: dict[str, Path], tmp_path: Path) -> None:
    res = _run(fw["exit3"], tmp_path)
    assert res.exit_code == 3 and not res.timed_out
    assert res.output is not None
    with pytest.raises(StageError, match="code 3 \\(stack overflow guard\\)"):
        res.raise_for_status()


def test_raw_run_has_no_plugin(fw: dict[str, Path], tmp_path: Path) -> None:
    res = run_firmware(fw["main"], seed=1, handlers=[], out_dir=tmp_path, timeout_s=30,
                       raw=True).raise_for_status()
    assert res.events == [] and res.totals is None
    assert not any("-plugin" == a for a in res.command)


def test_missing_plugin_and_elf_are_clear_errors(fw: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StageError, match="cycle plugin not built"):
        run_firmware(fw["main"], seed=0, handlers=[], out_dir=tmp_path, timeout_s=5,
                     plugin=tmp_path / "nope.so")
    with pytest.raises(StageError, match="firmware ELF not found"):
        run_firmware(tmp_path / "nope.elf", seed=0, handlers=[], out_dir=tmp_path,
                     timeout_s=5)


def test_plugin_rejects_bad_arguments(fw: dict[str, Path], tmp_path: Path) -> None:
    for arg in ("bogus=1", "ws=x", "trace_base=zz", "verify=2"):
        cmd = [QEMU, "-M", "lm3s6965evb", "-display", "none", "-serial", "null",
               "-monitor", "none", "-icount", "shift=0", "-kernel", str(fw["main"]),
               "-plugin", f"{PLUGIN},out={tmp_path / 'x.txt'},{arg}"]
        p = subprocess.run(cmd, capture_output=True, timeout=30)
        assert p.returncode != 0
        assert b"slicert_cycles: bad option" in p.stderr


def test_build_script_is_idempotent(plugin: Path) -> None:
    before = os.stat(plugin).st_mtime_ns
    t0 = time.monotonic()
    subprocess.run(["sh", str(ROOT / "qemu" / "build.sh")], check=True)
    assert time.monotonic() - t0 < 2.0
    assert os.stat(plugin).st_mtime_ns == before


# --------------------------------------------------------------------------------------
# The byte decoder against the capstone-text classifier of plugin 1.0.0 (verify=1)


def _run_verify(elf: Path, out: Path, *, handlers: tuple[int, ...] = (),
                ws: int = 0) -> tuple[PluginOutput, PluginOutput, int]:
    """Plugin files of the same run without and with verify=1, and the mismatch count."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for verify in (False, True):
        po = out / f"plugin_verify{int(verify)}.txt"
        cmd = build_command(elf, seed=1, handlers=handlers, plugin=PLUGIN, plugin_out=po,
                            ws=ws)
        if verify:
            cmd[cmd.index("-plugin") + 1] += ",verify=1"
        proc = subprocess.run(cmd, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
        files.append(read_plugin_output(po))
    plain, checked = files
    assert not any(c.startswith("verify") for c in plain.comments)
    line = next(c for c in checked.comments if c.startswith("verify "))
    words = line.split()            # verify insns N mismatches M distinct K
    insns, mismatches = int(words[2]), int(words[4])
    assert insns > 300, line
    detail = "\n".join(c for c in checked.comments if c.startswith("mismatch"))
    assert mismatches == 0, f"{line}\n{detail}"
    # verify=1 only adds comments: same events, same totals
    assert checked.events == plain.events and checked.totals == plain.totals
    assert any("unclassified 0" in c for c in plain.comments), plain.comments
    return plain, checked, insns


def test_verify_mode_agrees_on_test_firmware(fw: dict[str, Path], tmp_path: Path) -> None:
    for ws in (0, 2):
        plain, _, _ = _run_verify(fw["main"], tmp_path / f"ws{ws}",
                                  handlers=(_handler(fw["main"]),), ws=ws)
        ids = [e.id for e in plain.events]
        a, b = plain.events[ids.index(20)], plain.events[ids.index(21)]
        assert (b.cycles - a.cycles, b.insns - a.insns) == _expected("MIX", ws=ws)


REAL_FIRMWARE = {
    # the default operator (int8 conv2d 5x5) of experiments/conv2d_5x5.yaml
    "int8": ["parameters.tile_size=[8]", "parameters.unroll=[1,4]", "parameters.slice=[32]"],
    # float32: soft-float libgcc (shifts, clz, umull, ...)
    "float32": ["operator.type=conv2d", "operator.input=[1,12,12,3]",
                "operator.out_channels=4", "operator.dtype=float32",
                "parameters.tile_size=[4]", "parameters.unroll=[1,4]",
                "parameters.slice=[32]"],
}


RealFirmware = dict[str, tuple[Path, tuple[int, ...]]]


@pytest.fixture(scope="module")
def real_fw(tmp_path_factory: pytest.TempPathFactory) -> RealFirmware:
    """Firmware built by the real pipeline stages: {name: (elf, handler addresses)}."""
    _need_tools()
    pytest.importorskip("tvm")
    from slicert_ops.codegen import generate_kernel, make_inputs
    from slicert_ops.codegen.spec import ScheduleParams
    from slicert_ops.firmware import build_firmware
    from slicert_ops.manifest import expand, load_manifest
    from slicert_ops.manifest.expand import operator_spec_from_dict
    from slicert_ops.pipeline import runtime_options

    base = tmp_path_factory.mktemp("real_fw")
    built = {}
    for name, overrides in REAL_FIRMWARE.items():
        exp = load_manifest(ROOT / "experiments" / "conv2d_5x5.yaml",
                            ["experiment.repeat=1", *overrides])
        for cand in expand(exp).candidates:
            op = operator_spec_from_dict(cand.operator)
            kernel = generate_kernel(op, ScheduleParams(**cand.schedule))
            tag = f"{name}_u{cand.schedule['unroll']}"
            res = build_firmware(kernel, make_inputs(op, seed=0), runtime_options(cand),
                                 base / tag)
            built[tag] = (res.elf, tuple(sorted(res.handlers.values())))
    assert len(built) == 4
    return built


def test_verify_mode_agrees_on_real_firmware(plugin: Path, real_fw: RealFirmware,
                                             tmp_path: Path) -> None:
    checked = 0
    for i, (tag, (elf, handlers)) in enumerate(sorted(real_fw.items())):
        plain, _, n = _run_verify(elf, tmp_path / tag, handlers=handlers, ws=i % 2)
        assert plain.totals["instructions"] > 1_000_000
        checked += n
    assert checked > 8000


def test_decoder_matches_capstone_classifier_over_encodings(plugin: Path, tmp_path: Path) -> None:
    """All 16-bit Thumb encodings and sampled 32-bit ones (every first halfword, all
    second halfwords for a few), through capstone as QEMU 7.2 calls it."""
    if not Path("/usr/include/capstone/capstone.h").is_file():
        pytest.fail("capstone headers not installed: run `make setup` (libcapstone-dev)")
    exe = tmp_path / "decoder_check"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11",
                    "-I", str(ROOT / "qemu" / "include" / "qemu"), "-o", str(exe),
                    str(ROOT / "tests" / "support" / "decoder_check.c"), "-lcapstone"],
                   check=True)
    # full second halfwords: pop.w/ldm sp!, ldr literal, ldr.w [sp], mrs, ldrh/ldrb literal,
    # stm/push.w, ldrex/tbb, b/bl/misc control
    proc = subprocess.run([str(exe), "128", "e8bd", "f85f", "f85d", "f3ef", "f83f", "f81f",
                           "e92d", "e8d0", "f3af", "f000"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert proc.stdout.strip().endswith("mismatches 0")
