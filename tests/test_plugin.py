"""The QEMU cycle plugin on a hand-written test firmware (real gcc + patched QEMU).

The cost rules themselves are checked one by one in tests/test_cycle_model.py; these tests
cover the plugin's mechanics: exact instruction counts, events and payloads, exception
entries with their assertion times, the clock, determinism, timeouts, errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from slicert_ops.errors import StageError
from slicert_ops.paths import QEMU_BIN
from slicert_ops.sim import events as ev
from slicert_ops.sim.qemu import SimResult, run_firmware
from slicert_ops.sim.trace import read_plugin_output

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
FW_DIR = ROOT / "tests" / "support" / "plugin_fw"
PLUGIN = ROOT / "build" / "qemu" / "libslicert_cycles.so"
CC = "arm-none-eabi-gcc"
QEMU = str(QEMU_BIN)
LOOP_N = 1000
SYSTICK = 15


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


def _run(elf: Path, out: Path, *, seed: int = 7, ws: int = 0,
         timeout_s: float = 30) -> SimResult:
    return run_firmware(elf, seed=seed, out_dir=out, timeout_s=timeout_s, plugin=PLUGIN,
                        ws=ws)


def _marks(res: SimResult) -> list[int]:
    """Event ids of the firmware's stubs (without the plugin's exception entries)."""
    return [e.id for e in res.events if e.id != ev.EXC_ENTRY]


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


def _pair(res: SimResult, first: int, second: int):
    ids = [e.id for e in res.events]
    a = res.events[ids.index(first)]
    b = res.events[ids.index(second)]
    return b.cycles - a.cycles, b.insns - a.insns


def test_known_loop_counts_exact_instructions(fw: dict[str, Path], tmp_path: Path) -> None:
    per_iter = set()
    for name, n in (("main", LOOP_N), ("loop10", 10)):
        res = _run(fw[name], tmp_path / name).raise_for_status()
        cycles, insns = _pair(res, ev.KERNEL_START, ev.KERNEL_END)
        assert insns == 6 * n + 4                       # one MMIO load per iteration
        per_iter.add(cycles)
    a, b = sorted(per_iter)
    assert (b - a) % (LOOP_N - 10) == 0                 # the same cost every iteration
    head = read_plugin_output(tmp_path / "main" / "plugin_events.txt")
    assert head.plugin_version == ev.PLUGIN_VERSION
    assert head.cycle_model == ev.CYCLE_MODEL_VERSION
    # every instruction gcc emitted for the firmware is decoded
    assert any("unclassified 0" in c for c in head.comments), head.comments


def test_events_payloads_seed_and_output(fw: dict[str, Path], tmp_path: Path) -> None:
    res = _run(fw["main"], tmp_path, seed=123456789).raise_for_status()
    assert res.exit_code == 0 and not res.timed_out
    ids = _marks(res)
    n_irq = ids.count(ev.IRQ_ENTER)
    assert n_irq == 5
    assert ids == ([ev.BOOT, ev.CAL_START, ev.CAL_END, ev.KERNEL_START, ev.KERNEL_END, 20, 21]
                   + [ev.IRQ_ENTER, ev.IRQ_EXIT] * n_irq
                   + [ev.RT_RELEASE, ev.RT_START, ev.RT_END, 127, ev.OUTPUT_READY])
    payload = {e.id: e.payload for e in res.events if e.id != ev.EXC_ENTRY}
    assert payload[ev.CAL_START] == 123456789          # -append seed=N reached the guest
    assert payload[ev.RT_RELEASE] == 0xDEADBEEF
    assert payload[ev.RT_START] == 0                    # pending payload was consumed
    assert payload[ev.RT_END] == 0x00A50000
    assert payload[127] == 0x80000001
    assert all(e.payload == 0 for e in res.events if e.id in (ev.BOOT, ev.IRQ_ENTER))
    stamps = [(e.cycles, e.insns) for e in res.events]
    assert stamps == sorted(stamps)
    assert res.totals["instructions"] >= res.events[-1].insns
    # SysTick fires periodically in modelled cycles: equal spacing of its assertions
    pend = [e.pend for e in res.events if e.id == ev.EXC_ENTRY and e.payload == SYSTICK]
    assert len(pend) == n_irq and len({b - a for a, b in zip(pend, pend[1:], strict=False)}) == 1
    words = [int.from_bytes(res.output[i:i + 4], "little") for i in range(0, 16, 4)]
    assert words == [LOOP_N * LOOP_N, words[1], 5, 123456789]
    assert res.raw_files["plugin_events.txt"].is_file()


def test_exception_entries_are_recorded_with_their_assertion(fw: dict[str, Path],
                                                              tmp_path: Path) -> None:
    res = _run(fw["main"], tmp_path).raise_for_status()
    entries = [e for e in res.events if e.id == ev.EXC_ENTRY and e.payload == SYSTICK]
    assert len(entries) == 5
    for exc in entries:
        # assertion to the handler's first instruction: at least the 12-cycle entry
        assert exc.pend >= 0 and exc.cycles - exc.pend >= 12
        # the handler's irq_enter stub comes after its entry
        nxt = next(e for e in res.events if e.insns >= exc.insns and e.id == ev.IRQ_ENTER)
        assert nxt.cycles > exc.cycles


def test_two_runs_byte_identical(fw: dict[str, Path], tmp_path: Path) -> None:
    a = _run(fw["main"], tmp_path / "a", ws=1).raise_for_status()
    b = _run(fw["main"], tmp_path / "b", ws=1).raise_for_status()
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
    assert _marks(res) == [ev.BOOT, ev.CAL_START, ev.CAL_END]
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
    res = run_firmware(fw["main"], seed=1, out_dir=tmp_path, timeout_s=30,
                       raw=True).raise_for_status()
    assert res.events == [] and res.totals is None
    assert not any("-plugin" == a for a in res.command)


def test_missing_plugin_and_elf_are_clear_errors(fw: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StageError, match="cycle plugin not built"):
        run_firmware(fw["main"], seed=0, out_dir=tmp_path, timeout_s=5,
                     plugin=tmp_path / "nope.so")
    with pytest.raises(StageError, match="firmware ELF not found"):
        run_firmware(tmp_path / "nope.elf", seed=0, out_dir=tmp_path, timeout_s=5)


def test_plugin_rejects_bad_arguments(fw: dict[str, Path], tmp_path: Path) -> None:
    base = [QEMU, "-M", "lm3s6965evb", "-display", "none", "-serial", "null",
            "-monitor", "none", "-kernel", str(fw["main"])]
    for arg in ("bogus=1", "ws=x", "trace_base=zz", "classes=2", "flash_end=x", "core=cm7"):
        cmd = [*base, "-accel", "tcg,thread=single",
               "-plugin", f"{PLUGIN},out={tmp_path / 'x.txt'},{arg}"]
        p = subprocess.run(cmd, capture_output=True, timeout=30)
        assert p.returncode != 0
        assert b"slicert_cycles: bad option" in p.stderr
    # the plugin is the clock: it refuses -icount, and a QEMU without the patch
    p = subprocess.run([*base, "-icount", "shift=0", "-plugin",
                        f"{PLUGIN},out={tmp_path / 'x.txt'}"], capture_output=True, timeout=30)
    assert p.returncode != 0 and b"cannot drive the virtual clock" in p.stderr


def test_build_script_is_idempotent(plugin: Path) -> None:
    before = os.stat(plugin).st_mtime_ns
    t0 = time.monotonic()
    subprocess.run(["sh", str(ROOT / "qemu" / "build.sh")], check=True)
    assert time.monotonic() - t0 < 2.0
    assert os.stat(plugin).st_mtime_ns == before


# --------------------------------------------------------------------------------------
# The byte decoder (qemu/thumb_decode.h) against the capstone-text classifier it replaced


def test_decoder_matches_capstone_classifier_over_encodings(plugin: Path, tmp_path: Path) -> None:
    """All 16-bit Thumb encodings and sampled 32-bit ones (every first halfword, all
    second halfwords for a few), through capstone as QEMU 7.2 calls it."""
    if not Path("/usr/include/capstone/capstone.h").is_file():
        pytest.fail("capstone headers not installed: run `make setup` (libcapstone-dev)")
    exe = tmp_path / "decoder_check"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11",
                    "-I", str(ROOT / "qemu"), "-o", str(exe),
                    str(ROOT / "tests" / "support" / "decoder_check.c"), "-lcapstone"],
                   check=True)
    # full second halfwords: pop.w/ldm sp!, ldr literal, ldr.w [sp], mrs, ldrh/ldrb literal,
    # stm/push.w, ldrex/tbb, b/bl/misc control
    proc = subprocess.run([str(exe), "128", "e8bd", "f85f", "f85d", "f3ef", "f83f", "f81f",
                           "e92d", "e8d0", "f3af", "f000"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert proc.stdout.strip().endswith("mismatches 0")
    # ARMv7E-M (cm4-v1: decode_thumb_m4): the DSP and FP spaces, all second halfwords for
    # smlad, the parallel add/subtract and misc DSP space, smlal* (long DSP), vadd..,
    # vmla.., the other FP data processing, vmrs/vmsr, vldr, vpop/vldm sp!, vmov r, r
    # and pkhbt/pkhtb
    proc = subprocess.run([str(exe), "--m4", "512", "fb21", "fa90", "fbc0", "ee30", "ee00",
                           "eeb0", "eef1", "ed94", "ecbd", "ec41", "eac0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert proc.stdout.strip().endswith("mismatches 0")
