"""Run folders as the tracking sees them: read, lock, mark ``.tracked``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from slicert_ops.errors import InputError

TRACKED_FILE = ".tracked"   # the MLflow run id, written once everything is uploaded
SWEEP_FILE = "sweep.json"   # in the experiment folder: which MLflow sweep run it belongs to


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("file is missing", file=str(path),
                         fix="is this a run folder written by the pipeline?") from None
    except ValueError as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("not a JSON object", file=str(path))
    return data


def read_run_manifest(run_dir: Path) -> dict:
    """manifest.json of a run folder, with the fields that identify its MLflow run."""
    manifest = read_json(run_dir / "manifest.json")
    for field_name in ("candidate_id", "repeat"):
        if field_name not in manifest:
            raise InputError("field is missing", file=str(run_dir / "manifest.json"),
                             field=field_name)
    return manifest


@contextlib.contextmanager
def dir_lock(path: Path) -> Iterator[None]:
    """flock on the directory itself: two processes never log the same folder at once."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_tracked(run_dir: Path | str) -> str | None:
    """The MLflow run id a folder was logged as, or None."""
    try:
        text = (Path(run_dir) / TRACKED_FILE).read_text().strip()
    except OSError:
        return None
    return text.split()[0] if text else None
