"""The search objective: one metric to minimise, optionally subject to upper bounds.

Grammar (whitespace-insensitive, parsed strictly; anything else is an error naming the fix)::

    objective   := METRIC [ "subject to" bound { "and" bound } ]
    bound       := BOUND_NAME "<=" NUMBER
    METRIC      := kernel_cycles | wall_cycles | instructions | kernel_instructions
                   | max_preemption_latency_cycles | yield_overhead_cycles | text_bytes
    BOUND_NAME  := any metric of docs/contracts.md (cycles, counts, bytes), or a
                   latency in microseconds: max_preemption_latency_us, irq_latency_max_us, ...

Time bounds are converted to modelled cycles with the core's clock (docs/contracts.md):
``runner.cpu_mhz`` cycles per microsecond, 50 by default (``CYCLES_PER_US``: **1 us = 50
cycles**). A ``..._us`` name maps to the metric ``..._cycles``.

Per candidate, repeats are aggregated before the objective is evaluated: the objective
metric is the mean over repeats; a bound on a ``max_*`` / ``*_p99_*`` metric or on
``deadline_misses`` uses the worst repeat (the maximum); other bounds use the mean.
A candidate that breaks any bound is *infeasible*: it is reported as such and is never
returned as the best.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CYCLES_PER_US = 50  # modelled cycles per microsecond (50 MHz board clock, docs/contracts.md)

# Metrics a search may minimise.
MINIMISABLE = ("kernel_cycles", "wall_cycles", "instructions", "kernel_instructions",
               "max_preemption_latency_cycles", "yield_overhead_cycles", "text_bytes")

# Metrics a bound may name (contract names). `_us` forms of the `_cycles` ones are accepted too.
BOUNDABLE = (
    "kernel_cycles", "wall_cycles", "instructions", "kernel_instructions", "yield_checks",
    "yield_check_cycles", "yield_overhead_cycles", "slices", "pendsv_count",
    "pendsv_overhead_mean_cycles", "pendsv_overhead_max_cycles", "irq_latency_mean_cycles",
    "irq_latency_p99_cycles", "irq_latency_max_cycles", "max_preemption_latency_cycles",
    "mean_preemption_latency_cycles", "deadline_misses", "text_bytes", "data_bytes",
    "bss_bytes",
)
# Metrics only measured under simulated IRQ load (0 otherwise: a bound on them is vacuous).
IRQ_METRICS = ("irq_latency_mean_cycles", "irq_latency_p99_cycles", "irq_latency_max_cycles",
               "max_preemption_latency_cycles", "mean_preemption_latency_cycles",
               "deadline_misses")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_BOUND_RE = re.compile(rf"^\s*({_NAME})\s*(<=|<|>=|>|==|=)\s*({_NUMBER}|\S+)\s*$")
_SUBJECT_RE = re.compile(r"\s+subject\s+to\s+", re.IGNORECASE)


def cycles_per_us(exp: Any) -> float:
    """The core clock of an experiment (``runner.cpu_mhz``; 1 us = that many cycles)."""
    return float((getattr(exp, "runner", None) or {}).get("cpu_mhz") or CYCLES_PER_US)


class ObjectiveError(ValueError):
    """A malformed objective string; the message says what would be valid."""


@dataclass(frozen=True)
class Bound:
    """``metric <= limit`` in the metric's own unit (cycles for latencies)."""

    metric: str
    limit: float
    text: str  # as the user wrote it (normalized), e.g. "max_preemption_latency_us <= 40"

    def aggregate(self) -> str:
        return "max" if _worst_case(self.metric) else "mean"


@dataclass(frozen=True)
class Objective:
    metric: str = "kernel_cycles"
    bounds: tuple[Bound, ...] = field(default_factory=tuple)
    text: str = "kernel_cycles"
    cycles_per_us: float = CYCLES_PER_US

    @property
    def constrained(self) -> bool:
        return bool(self.bounds)

    @property
    def metrics(self) -> list[str]:
        """The objective metric and every bounded metric (what a model must predict)."""
        out = [self.metric]
        out += [b.metric for b in self.bounds if b.metric not in out]
        return out

    def evaluate(self, metrics: Mapping[str, Any]) -> Evaluation:
        """Objective value and feasibility of one candidate's aggregated metrics."""
        value = _number(metrics.get(self.metric))
        if value is None:
            return Evaluation(None, False, [f"{self.metric} was not measured"])
        violations = []
        for b in self.bounds:
            got = _number(metrics.get(b.metric))
            if got is None:
                violations.append(f"{b.metric} was not measured")
            elif got > b.limit:
                violations.append(f"{b.metric} {got:g} > {b.limit:g}")
        return Evaluation(value, not violations, violations)

    def describe(self) -> str:
        if not self.bounds:
            return f"minimise {self.metric}"
        parts = [f"{b.metric} <= {b.limit:g}" + (f" (from {b.text})" if "_us" in b.text else "")
                 for b in self.bounds]
        return f"minimise {self.metric} subject to " + " and ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "metric": self.metric,
                "bounds": [{"metric": b.metric, "limit": b.limit, "text": b.text}
                           for b in self.bounds],
                "cycles_per_us": self.cycles_per_us}


@dataclass(frozen=True)
class Evaluation:
    value: float | None
    feasible: bool
    violations: list[str]


def parse_objective(text: Any, cycles_per_us: float = CYCLES_PER_US) -> Objective:
    """Parse the manifest's ``search.objective``; raise ObjectiveError with the fix.
    ``cycles_per_us``: the core clock in MHz (``runner.cpu_mhz``) for ``_us`` bounds."""
    if not isinstance(text, str) or not text.strip():
        raise ObjectiveError(f"must be a string such as 'kernel_cycles' or 'kernel_cycles "
                             f"subject to max_preemption_latency_us <= 40', got {text!r}")
    parts = _SUBJECT_RE.split(text.strip(), maxsplit=1)
    metric = parts[0].strip()
    if metric not in MINIMISABLE:
        hint = ""
        if "subject" in metric.lower() or " " in metric:
            hint = " (write 'METRIC subject to NAME <= NUMBER')"
        raise ObjectiveError(f"{metric!r} is not a metric a search can minimise{hint}; "
                             f"valid: {', '.join(MINIMISABLE)}")
    bounds: list[Bound] = []
    if len(parts) == 2:
        clauses = re.split(r"\s+and\s+", parts[1].strip(), flags=re.IGNORECASE)
        for clause in clauses:
            bounds.append(_parse_bound(clause, cycles_per_us))
        names = [b.metric for b in bounds]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ObjectiveError(f"{dup[0]} is bounded twice; give one bound per metric")
    canonical = metric + (" subject to " + " and ".join(b.text for b in bounds)
                          if bounds else "")
    return Objective(metric=metric, bounds=tuple(bounds), text=canonical,
                     cycles_per_us=cycles_per_us)


def _parse_bound(clause: str, cycles_per_us: float = CYCLES_PER_US) -> Bound:
    m = _BOUND_RE.match(clause)
    if not m:
        raise ObjectiveError(f"cannot read the bound {clause.strip()!r}: write "
                             "'NAME <= NUMBER', e.g. 'max_preemption_latency_us <= 40'")
    name, op, number = m.groups()
    if op != "<=":
        raise ObjectiveError(f"bound {clause.strip()!r}: only upper bounds ('<=') are "
                             "supported")
    if not re.fullmatch(_NUMBER, number):
        raise ObjectiveError(f"bound {clause.strip()!r}: {number!r} is not a number")
    limit = float(number)
    if not math.isfinite(limit) or limit < 0:
        raise ObjectiveError(f"bound {clause.strip()!r}: the limit must be a number >= 0")
    metric = name
    if name.endswith("_us"):
        metric = name[:-3] + "_cycles"
        if metric not in BOUNDABLE:
            raise ObjectiveError(f"{name!r} is not a time metric; valid microsecond names: "
                                 + ", ".join(n[:-7] + "_us" for n in BOUNDABLE
                                             if n.endswith("_cycles")))
        limit *= cycles_per_us
    elif name not in BOUNDABLE:
        raise ObjectiveError(f"{name!r} is not a metric that can be bounded; valid: "
                             f"{', '.join(BOUNDABLE)} (or the _us form of a _cycles metric)")
    return Bound(metric=metric, limit=limit, text=f"{name} <= {number}")


def _worst_case(metric: str) -> bool:
    return metric.startswith("max_") or "_max_" in metric or "_p99_" in metric \
        or metric == "deadline_misses"


def aggregate_repeats(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of one candidate over its repeats: worst case for max/p99 metrics and
    deadline misses, minimum for ``correct``, mean for the rest."""
    runs = [r for r in runs if r]
    if not runs:
        return {}
    keys = sorted({k for r in runs for k in r})
    out: dict[str, Any] = {}
    for k in keys:
        vals = [v for v in (_number(r.get(k)) for r in runs) if v is not None]
        if not vals:
            continue
        if k == "correct":
            out[k] = min(vals)
        elif _worst_case(k):
            out[k] = max(vals)
        else:
            out[k] = sum(vals) / len(vals)
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None
