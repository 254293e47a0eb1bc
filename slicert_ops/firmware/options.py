"""Runtime options of the SliceRT firmware: compile-time `SLICERT_*` defines.

All times are microseconds of the modelled core's clock (``cpu_mhz``): the cycle plugin
drives QEMU's virtual clock, so one timer tick is one modelled Cortex-M3 cycle and a µs
is ``cpu_mhz`` cycles. Only the IRQ-load seed is per run (``-append seed=<n>``), so the
repeats of a candidate reuse one ELF. Limits mirror ``zephyr/include/slicert/config.h``
and ``zephyr/ports/baremetal-cm3/port.c``: an invalid value is rejected here, with the
field named, before gcc runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from slicert_ops.errors import InputError

#: Default clock of the modelled core, MHz (runner.cpu_mhz).
DEFAULT_CPU_MHZ = 50
#: Range of runner.cpu_mhz.
MIN_CPU_MHZ, MAX_CPU_MHZ = 1, 1000
#: Cycles the 24-bit SysTick can time: the longest slice is this many cycles.
SYSTICK_MAX_CYCLES = 1 << 24


@dataclass(frozen=True)
class RuntimeOptions:
    """Options of one firmware build (one candidate).

    slice_us:       slice budget of the kernel thread; the SysTick fires every slice_us
                    and the kernel yields at its next micro-tile boundary. 0 = no slicing.
                    Default 1000 (1 ms). At most 2^24 cycles (335544 us at 50 MHz).
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
    cpu_mhz:        clock of the modelled core, MHz: every µs above is cpu_mhz cycles.
                    Default 50. Range 1..1000.
    """

    slice_us: int = 1000
    irq_load: bool = False
    irq_period_us: int = 1000
    irq_jitter_us: int = 0
    rt_work_iters: int = 100
    rt_deadline_us: int = 500
    cal_checks: int = 64
    cpu_mhz: int = DEFAULT_CPU_MHZ

    @property
    def ticks_per_us(self) -> int:
        """Timer ticks (= modelled cycles) per microsecond."""
        return self.cpu_mhz

    def cycles(self, us: int) -> int:
        """Modelled cycles in ``us`` microseconds."""
        return us * self.cpu_mhz

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, msg: str) -> None:
            if not ok:
                raise InputError(msg, field=f"runtime_options.{field}")

        for name in ("slice_us", "irq_period_us", "irq_jitter_us", "rt_work_iters",
                     "rt_deadline_us", "cal_checks", "cpu_mhz"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():  # e.g. slice 32.0 from YAML
                value = int(value)
                object.__setattr__(self, name, value)
            need(isinstance(value, int) and not isinstance(value, bool), name,
                 f"must be a whole number of microseconds/iterations, got {value!r}")
            need(value >= 0, name, f"must be >= 0, got {value}")
        need(isinstance(self.irq_load, bool), "irq_load", "must be true or false")
        need(MIN_CPU_MHZ <= self.cpu_mhz <= MAX_CPU_MHZ, "cpu_mhz",
             f"must be between {MIN_CPU_MHZ} and {MAX_CPU_MHZ} MHz, got {self.cpu_mhz}")
        max_slice = SYSTICK_MAX_CYCLES // self.cpu_mhz
        need(self.slice_us <= max_slice, "slice_us",
             f"{self.slice_us} us is longer than the 24-bit SysTick can time at "
             f"{self.cpu_mhz} MHz (max {max_slice} us; 0 turns slicing off)")
        need(1 <= self.cal_checks <= 4096, "cal_checks",
             f"must be between 1 and 4096, got {self.cal_checks}")
        need(self.rt_work_iters <= 10_000_000, "rt_work_iters",
             f"must be <= 10000000, got {self.rt_work_iters}")
        need(self.cycles(self.rt_deadline_us) < 2**31, "rt_deadline_us", "is too large")
        if self.irq_load:
            need(self.irq_period_us >= 5, "irq_period_us",
                 f"must be at least 5 us with irq_load on, got {self.irq_period_us}")
            need(self.cycles(self.irq_period_us) < 2**30, "irq_period_us", "is too large")
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
            "SLICERT_SYSCLK_HZ": self.cpu_mhz * 1_000_000,
        }

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)
