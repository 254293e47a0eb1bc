"""Errors a user sees: each names where the problem is and what would fix it."""


class SliceRTError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code = 1


class InputError(SliceRTError):
    """Invalid user input (manifest, flags): exit status 2, nothing was run."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None) -> None:
        self.file, self.field, self.fix = file, field, fix
        parts = []
        if file:
            parts.append(str(file))
        if field:
            parts.append(field)
        head = ": ".join(parts)
        text = f"{head}: {message}" if head else message
        if fix:
            text += f" ({fix})"
        super().__init__(text)


class InsufficientDataError(InputError):
    """Too few valid measurements for what was asked (e.g. training a cost model)."""


class ServiceError(SliceRTError):
    """A service (S3, MLflow, Airflow, Docker) is down or refused us."""

    exit_code = 3


class StageError(SliceRTError):
    """A pipeline stage (codegen, build, run, parse) failed for one candidate."""

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(f"{stage}: {message}")
