"""Runtime options of the SliceRT firmware: compile-time `SLICERT_*` defines.

All times are microseconds of *virtual* time (QEMU ``-icount shift=0``: one retired
instruction = 1 ns). Only the IRQ-load seed is per run (``-append seed=<n>``), so the
repeats of a candidate reuse one ELF. Limits mirror ``zephyr/include/slicert/config.h``
and ``zephyr/ports/baremetal-cm3/port.c``: an invalid value is rejected here, with the
field named, before gcc runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from slicert_ops.errors import InputError

#: Timer ticks per microsecond: the runtime sets the LM3S6965 clock to 50 MHz (RCC SYSDIV=3);
#: QEMU 7.2 honours it, one SysTick / GPTM tick = 20 ns of virtual time.
TICKS_PER_US = 50
#: Longest slice the 24-bit SysTick can time at 50 MHz.
MAX_SLICE_US = (1 << 24) // TICKS_PER_US


@dataclass(frozen=True)
class RuntimeOptions:
    """Options of one firmware build (one candidate).

    slice_us:       slice budget of the kernel thread; the SysTick fires every slice_us
                    and the kernel yields at its next micro-tile boundary. 0 = no slicing.
                    Default 1000 (1 ms). Range 0, 1..335544.
    irq_load:       simulated interrupt load on (GPTM Timer0A, IRQ 19), releasing the RT
                    task once per interrupt. Default off.
    irq_period_us:  nominal IRQ period. Default 1000. At least 5.
    irq_jitter_us:  each assertion k happens at (k+1)*period + J_k, J_k uniform in
                    [0, irq_jitter_us], from xorshift32 seeded by the run's seed.
                    Default 0. Must be < irq_period_us.
    rt_work_iters:  loop iterations of one RT job (~4 instructions each). Default 100.
    rt_deadline_us: relative deadline of an RT job, from the IRQ assertion. Default 500.
    cal_checks:     yield checks in the calibration window (cal_start/cal_end) before
                    kernel_start. Default 64. Range 1..4096.
    """

    slice_us: int = 1000
    irq_load: bool = False
    irq_period_us: int = 1000
    irq_jitter_us: int = 0
    rt_work_iters: int = 100
    rt_deadline_us: int = 500
    cal_checks: int = 64

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, msg: str) -> None:
            if not ok:
                raise InputError(msg, field=f"runtime_options.{field}")

        for name in ("slice_us", "irq_period_us", "irq_jitter_us", "rt_work_iters",
                     "rt_deadline_us", "cal_checks"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():  # e.g. slice 32.0 from YAML
                value = int(value)
                object.__setattr__(self, name, value)
            need(isinstance(value, int) and not isinstance(value, bool), name,
                 f"must be a whole number of microseconds/iterations, got {value!r}")
            need(value >= 0, name, f"must be >= 0, got {value}")
        need(isinstance(self.irq_load, bool), "irq_load", "must be true or false")
        need(self.slice_us <= MAX_SLICE_US, "slice_us",
             f"{self.slice_us} us is longer than the 24-bit SysTick can time at 50 MHz "
             f"(max {MAX_SLICE_US} us; 0 turns slicing off)")
        need(1 <= self.cal_checks <= 4096, "cal_checks",
             f"must be between 1 and 4096, got {self.cal_checks}")
        need(self.rt_work_iters <= 10_000_000, "rt_work_iters",
             f"must be <= 10000000, got {self.rt_work_iters}")
        need(self.rt_deadline_us * TICKS_PER_US < 2**31, "rt_deadline_us", "is too large")
        if self.irq_load:
            need(self.irq_period_us >= 5, "irq_period_us",
                 f"must be at least 5 us with irq_load on, got {self.irq_period_us}")
            need(self.irq_period_us * TICKS_PER_US < 2**30, "irq_period_us", "is too large")
            need(self.irq_jitter_us < self.irq_period_us, "irq_jitter_us",
                 f"must be smaller than irq_period_us ({self.irq_period_us}), "
                 f"got {self.irq_jitter_us}")

    def defines(self) -> dict[str, int]:
        """The `SLICERT_*` compile-time defines of these options."""
        return {
            "SLICERT_SLICE_US": self.slice_us,
            "SLICERT_IRQ_LOAD": int(self.irq_load),
            "SLICERT_IRQ_PERIOD_US": self.irq_period_us,
            "SLICERT_IRQ_JITTER_US": self.irq_jitter_us,
            "SLICERT_RT_WORK_ITERS": self.rt_work_iters,
            "SLICERT_RT_DEADLINE_US": self.rt_deadline_us,
            "SLICERT_CAL_CHECKS": self.cal_checks,
        }

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)
