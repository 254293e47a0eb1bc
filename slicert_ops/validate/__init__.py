"""Great Expectations validation of run folders and the results table.

    from slicert_ops.validate import (ValidationResult, validate_results_table, validate_run,
                                      validate_runs)

Imports are lazy: importing this package does not import great_expectations (~3 s).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ValidationResult", "validate_results_table", "validate_run", "validate_runs"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from slicert_ops.validate import gx_runner

        return getattr(gx_runner, name)
    raise AttributeError(name)
