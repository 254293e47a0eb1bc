"""TVM code generation of single operators: value types and checks, ``generate_kernel`` (an
operator is a task of the one kernel generator, ``network/kernels.py``), plain-C lowering
(``lowering.py``), features.

Public API (docs/contracts.md "Kernel"):

- value types: :class:`OperatorSpec`, :class:`ScheduleParams`, :class:`KernelSource`
- checks: :func:`check_operator`, :func:`check_schedule`, :func:`default_micro_tile`,
  :func:`default_form`, :func:`tile_counts`, :func:`footprint`
- :func:`generate_kernel` (imports TVM), :func:`features`, :func:`make_inputs`,
  :func:`reference`

Importing this package does not import TVM (~1 s); ``generate_kernel`` and the TVM-side
helpers are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .features import FEATURES_VERSION, feature_names, features
from .reference import make_inputs, reference
from .spec import (
    KernelSource,
    OperatorSpec,
    ScheduleParams,
    check_operator,
    check_schedule,
    default_form,
    default_micro_tile,
    footprint,
    tile_counts,
)

if TYPE_CHECKING:
    from .lower_c import generate_kernel, schedule_operator
    from .lowering import lowering_options

_LAZY = {"generate_kernel", "schedule_operator", "lowering_options"}

__all__ = [
    "FEATURES_VERSION",
    "KernelSource",
    "OperatorSpec",
    "ScheduleParams",
    "check_operator",
    "check_schedule",
    "default_form",
    "default_micro_tile",
    "feature_names",
    "features",
    "footprint",
    "generate_kernel",
    "lowering_options",
    "make_inputs",
    "reference",
    "schedule_operator",
    "tile_counts",
]


def __getattr__(name: str) -> Any:
    if name == "lowering_options":
        from . import lowering

        return lowering.lowering_options
    if name in _LAZY:
        from . import lower_c

        return getattr(lower_c, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
