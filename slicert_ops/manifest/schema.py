"""The manifest schema: fields, types, defaults and the documentation a user sees.

A small declarative table instead of a validation framework: every error must name the
file, the dotted field and what would be valid, and this keeps that in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The default operator: a 5x5 conv2d whose 32x32 output makes every tile size of the
# spec's example (8, 16, 32) meaningful, and whose int32 output (32 KiB) fits the
# lm3s6965's 64 KiB of RAM.
DEFAULT_OPERATOR: dict[str, Any] = {
    "type": "conv2d",
    "input": [1, 36, 36, 3],
    "kernel": [5, 5],
    "out_channels": 8,
    "stride": 1,
    "padding": 0,
    "dtype": "int8",
}

DTYPES = ("int8", "float32")
# The kernel forms of codegen.spec / network.tasks.FORMS, in number order.
FORM_NAMES = ("direct", "block", "im2col", "pointwise", "simd")
BOARDS = ("lm3s6965evb", "mps2-an385", "mps2-an386")


@dataclass(frozen=True)
class Field:
    """One manifest field: its type, default and help text."""

    kind: str  # "int", "bool", "str", "float", "int_list", "form_list", "enum", "shape"
    default: Any = None
    required: bool = False
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    length: int | None = None


# experiment.* scalar fields
EXPERIMENT_FIELDS: dict[str, Field] = {
    "name": Field("str", required=True,
                  help="experiment name: letters, digits, '_', '-', '.' (folder and DAG id)"),
    "description": Field("str", default="", help="free text"),
    "repeat": Field("int", default=1, minimum=1,
                    help="runs per candidate; repeat r uses IRQ-load seed r"),
    "nightly": Field("bool", default=False, help="include in the nightly sweep DAG"),
}

# experiment.parameters.*: each a non-empty list of positive ints (the schedule space)
PARAMETER_FIELDS: dict[str, Field] = {
    "tile_size": Field("int_list", required=True, minimum=1,
                       help="macro-tile edge (output pixels per side for conv2d, "
                            "output units for dense): locality"),
    "micro_tile": Field("int_list", default=None, minimum=1,
                        help="micro-tile edge: the preemption granule; a yield check "
                             "follows every micro-tile (default: see codegen docs)"),
    "unroll": Field("int_list", default=[1], minimum=1,
                    help="unroll factor of the innermost loop"),
    "slice": Field("int_list", default=[64], minimum=1,
                   help="slice budget in microseconds of the modelled core clock "
                        "(runner.cpu_mhz cycles per µs)"),
    "form": Field("form_list", default=None, choices=FORM_NAMES,
                  help="kernel forms (names or numbers): direct (0), block (1), im2col (2, "
                       "conv2d), pointwise (3, 1x1 stride-1 unpadded conv2d), simd (4, int8: "
                       "SMLAD on the Cortex-M4); default: the generator's form for the "
                       "operator, direct where it does not fit"),
    "pixel_block": Field("int_list", default=None, minimum=1,
                         help="output pixels per register block (conv2d, blocked forms)"),
    "reduction_unroll": Field("int_list", default=None, minimum=1,
                              help="unroll of the innermost reduction loop (blocked forms)"),
}

RUNNER_FIELDS: dict[str, Field] = {
    "simulate_irq_load": Field("bool", default=False,
                               help="periodic jittered timer IRQ releasing a real-time task"),
    "irq_period_us": Field("int", default=200, minimum=10,
                           help="IRQ-load period, microseconds of the modelled clock"),
    "irq_jitter_us": Field("int", default=50, minimum=0,
                           help="maximum IRQ-load jitter (seeded), microseconds"),
    "rt_work_iters": Field("int", default=200, minimum=1,
                           help="loop iterations of one real-time job"),
    "rt_deadline_us": Field("int", default=None, minimum=1,
                            help="real-time job deadline after release (default: the period)"),
    "cpu_mhz": Field("int", default=50, minimum=1, maximum=1000,
                     help="clock of the modelled core (Cortex-M3; M4 on mps2-an386), MHz: "
                          "every µs of the manifest (slice, IRQ period and jitter, "
                          "deadline) is cpu_mhz cycles"),
    "timeout_s": Field("float", default=60.0, minimum=1,
                       help="wall-clock limit of one QEMU run; a hung run is killed"),
    "board": Field("enum", default="lm3s6965evb", choices=BOARDS,
                   help="QEMU machine: lm3s6965evb (Cortex-M3, 248 KiB flash, 64 KiB RAM), "
                        "mps2-an385 (Cortex-M3, 4 MiB code RAM, 4 MiB RAM) or mps2-an386 "
                        "(Cortex-M4 with FPU, cycle model cm4-v1, the AN385's memory)"),
    "flash_wait_states": Field("int", default=0, minimum=0,
                               help="flash wait states: charged where fetches from "
                                    "flash stall (refills, sequential fetch, literal loads, "
                                    "vector fetch; qemu/cycle_model.md)"),
}

LOGGING_FIELDS: dict[str, Field] = {
    "raw": Field("bool", default=False, help="keep the raw QEMU/plugin logs beside the run"),
    "compress": Field("bool", default=False, help="gzip the raw logs"),
}

CONV2D_FIELDS: dict[str, Field] = {
    "type": Field("enum", required=True, choices=("conv2d", "dense"), help="operator"),
    "input": Field("shape", required=True, length=4, minimum=1, help="[N, H, W, C] (NHWC)"),
    "kernel": Field("shape", default=[5, 5], length=2, minimum=1, help="[KH, KW]"),
    "out_channels": Field("int", required=True, minimum=1, help="output channels K"),
    "stride": Field("int", default=1, minimum=1, help="stride (both axes)"),
    "padding": Field("int", default=0, minimum=0, help="zero padding (all sides)"),
    "dtype": Field("enum", default="int8", choices=DTYPES, help="input dtype"),
}

DENSE_FIELDS: dict[str, Field] = {
    "type": Field("enum", required=True, choices=("conv2d", "dense"), help="operator"),
    "input": Field("shape", required=True, length=2, minimum=1, help="[N, IN]"),
    "units": Field("int", required=True, minimum=1, help="output units OUT"),
    "dtype": Field("enum", default="int8", choices=DTYPES, help="input dtype"),
}

OPERATOR_FIELDS = {"conv2d": CONV2D_FIELDS, "dense": DENSE_FIELDS}

SECTIONS: dict[str, dict[str, Field]] = {
    "parameters": PARAMETER_FIELDS,
    "runner": RUNNER_FIELDS,
    "logging": LOGGING_FIELDS,
}

# experiment.search.*: optional; without it (or with strategy grid) the grid is swept.
SEARCH_STRATEGIES = ("grid", "random", "cost_model", "meta_schedule")
SEARCH_FIELDS: dict[str, Field] = {
    "strategy": Field("enum", default="grid", choices=SEARCH_STRATEGIES,
                      help="grid sweeps every candidate; the others measure at most "
                           "'budget' candidates"),
    "budget": Field("int", default=None, minimum=1,
                    help="candidates measured (each with all its repeats); required "
                         "unless strategy is grid"),
    "objective": Field("str", default="kernel_cycles",
                       help="'kernel_cycles' or 'kernel_cycles subject to "
                            "max_preemption_latency_us <= 40'"),
    "seed": Field("int", default=0, minimum=0, help="seed of sampling and exploration"),
    "rounds": Field("int", default=None, minimum=1,
                    help="cost_model: rounds after the initial sample (default: rounds of "
                         "4 candidates)"),
    "exploration": Field("float", default=0.2, minimum=0,
                         help="cost_model: share of each round drawn at random (0..1)"),
}

# Sections that are no longer accepted (none at present).
RESERVED_SECTIONS: tuple[str, ...] = ()


@dataclass
class Problems:
    """Collects every problem of a manifest so the user sees them all at once."""

    file: str
    items: list[str] = field(default_factory=list)

    def add(self, field_path: str, message: str) -> None:
        self.items.append(f"{field_path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)
