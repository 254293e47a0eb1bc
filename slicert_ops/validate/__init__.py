"""Validation of run folders and the results table.

The stage (what a sweep runs for every finished run; verdicts in validation.json):

    from slicert_ops.validate.stage import ValidationStage, Verdict, read_verdict, validate_run

The Great Expectations engine behind it (always validates, writes the reports):

    from slicert_ops.validate import (ValidationResult, validate_results_table, validate_run,
                                      validate_runs)

Imports are lazy: importing this package does not import great_expectations (~3 s).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ValidationResult", "ValidationStage", "Verdict", "read_verdict",
           "validate_results_table", "validate_run", "validate_runs"]
_STAGE = ("ValidationStage", "Verdict", "read_verdict")


def __getattr__(name: str) -> Any:
    if name in _STAGE:
        from slicert_ops.validate import stage

        return getattr(stage, name)
    if name in __all__:
        from slicert_ops.validate import gx_runner

        return getattr(gx_runner, name)
    raise AttributeError(name)
