"""Retention of superseded runs (``<experiment>/.superseded/``) and old plan files.

A re-run whose candidate differs from the run folder already there (another conf, another
toolchain) moves the older folder to ``.superseded/run_NNNN-<candidate id>-<unix time>``
instead of deleting it. Policy: per run number, the newest ``keep`` superseded folders are
kept and older ones deleted. It is applied automatically after every sweep (the index /
aggregate step) with ``keep`` = ``$SLICERT_KEEP_SUPERSEDED`` (default 2; 0 keeps none;
``all`` turns automatic pruning off), and on demand by `slicert gc RESULTS --keep K`.
Published runs (``run_NNNN``) and folders being written (``run_NNNN.tmp-*``) are never
touched. Per-run plan files (``plans/*.json``, written by Airflow's plan task) older than
``PLAN_MAX_AGE_S`` are removed too.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from slicert_ops.errors import InputError

ATTIC = ".superseded"
KEEP_ENV = "SLICERT_KEEP_SUPERSEDED"
DEFAULT_KEEP = 2
PLAN_DIR = "plans"
PLAN_MAX_AGE_S = 7 * 24 * 3600
_NAME = re.compile(r"^(run_\d+)-(.+)-(\d+)$")


@dataclass
class GcResult:
    removed: list[Path] = field(default_factory=list)
    kept: int = 0
    bytes_freed: int = 0

    def line(self, dry_run: bool = False) -> str:
        verb = "would remove" if dry_run else "removed"
        return (f"{verb} {len(self.removed)} superseded folder(s)/old plan(s), "
                f"{self.bytes_freed / 1e6:.1f} MB; kept {self.kept} superseded run(s)")


def keep_from_env(env: dict[str, str] | None = None) -> int | None:
    """The automatic policy: None = keep everything."""
    raw = (env if env is not None else os.environ).get(KEEP_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_KEEP
    if raw in ("all", "none", "off"):
        return None
    try:
        keep = int(raw)
    except ValueError:
        raise InputError(f"{KEEP_ENV}={raw!r} is not a number", field=KEEP_ENV,
                         fix="a count of superseded versions to keep per run, or 'all'"
                         ) from None
    if keep < 0:
        raise InputError(f"{KEEP_ENV} must be >= 0", field=KEEP_ENV)
    return keep


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _stamp(p: Path) -> int:
    m = _NAME.match(p.name)
    if m:
        return int(m.group(3))
    try:
        return int(p.stat().st_mtime)
    except OSError:
        return 0


def experiment_dirs(results: Path) -> list[Path]:
    """results itself when it is an experiment folder, else its sub-folders."""
    results = Path(results)
    if (results / ATTIC).is_dir() or any(results.glob("run_*")):
        return [results]
    return sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith("."))


def prune_superseded(exp_dir: str | Path, keep: int, *, dry_run: bool = False,
                     plan_max_age_s: float | None = PLAN_MAX_AGE_S) -> GcResult:
    """Keep the newest ``keep`` superseded folders per run number in one experiment folder."""
    if keep < 0:
        raise InputError("must be >= 0", field="--keep")
    exp_dir = Path(exp_dir)
    result = GcResult()
    attic = exp_dir / ATTIC
    groups: dict[str, list[Path]] = {}
    if attic.is_dir():
        for p in attic.iterdir():
            m = _NAME.match(p.name)
            groups.setdefault(m.group(1) if m else p.name, []).append(p)
    doomed: list[Path] = []
    for folders in groups.values():
        folders.sort(key=lambda p: (_stamp(p), p.name), reverse=True)
        result.kept += min(keep, len(folders))
        doomed += folders[keep:]
    if plan_max_age_s is not None and (exp_dir / PLAN_DIR).is_dir():
        cutoff = time.time() - plan_max_age_s
        for p in (exp_dir / PLAN_DIR).glob("*.json"):
            try:
                if p.stat().st_mtime < cutoff:
                    doomed.append(p)
            except OSError:
                pass
    for p in sorted(doomed):
        result.bytes_freed += _size(p) if p.is_dir() else p.stat().st_size
        result.removed.append(p)
        if not dry_run:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    if not dry_run and attic.is_dir() and not any(attic.iterdir()):
        attic.rmdir()
    return result


def gc(results: str | Path, keep: int, *, experiment: str | None = None,
       dry_run: bool = False) -> GcResult:
    results = Path(results)
    if not results.is_dir():
        raise InputError("not a folder", file=str(results),
                         fix="give the results folder (default: results)")
    dirs = [results / experiment] if experiment else experiment_dirs(results)
    total = GcResult()
    for d in dirs:
        r = prune_superseded(d, keep, dry_run=dry_run)
        total.removed += r.removed
        total.kept += r.kept
        total.bytes_freed += r.bytes_freed
    return total
