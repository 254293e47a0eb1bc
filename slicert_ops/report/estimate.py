"""How long a sweep will take, from measured per-run costs: `slicert check` warns on huge ones.

Costs come from the host timings every run records in its manifest.json (and the index):
per candidate ``codegen + build`` (paid once, shared by its repeats), per run ``run +
parse`` plus ``WRITE_S`` for the run folder. The medians of an existing index.parquet (the
experiment's own, else any under --out) are used; without one, the defaults below, measured
on the reference 2-core machine (conv2d_5x5, tile 8: codegen 0.04 s, build 0.82 s, QEMU run
0.11 s, parse 0.004 s per run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PER_CANDIDATE_S = 0.9
DEFAULT_PER_RUN_S = 0.15
WRITE_S = 0.03
WARN_RUNS = 100_000          # above this many runs, `slicert check` warns
WARN_SECONDS = 24 * 3600     # ... or above this estimated time (one job)


@dataclass(frozen=True)
class Estimate:
    candidates: int
    runs: int
    per_candidate_s: float
    per_run_s: float
    source: str

    def seconds(self, jobs: int = 1) -> float:
        return (self.candidates * self.per_candidate_s + self.runs * self.per_run_s) / max(1,
                                                                                           jobs)

    def too_big(self) -> bool:
        return self.runs > WARN_RUNS or self.seconds() > WARN_SECONDS


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    if days < 730:
        return f"{days:,.0f} days"
    return f"{days / 365.25:,.0f} years"


def _median(df, cols: dict[str, str], name: str) -> float:
    import pandas as pd

    if name not in cols:
        return 0.0
    v = pd.to_numeric(df[cols[name]], errors="coerce").median()
    return 0.0 if v is None or math.isnan(v) else float(v)


def measured_costs(index_files: list[Path]) -> tuple[float, float, str] | None:
    """(per candidate s, per run s, source) from the first readable index with timings."""
    import pandas as pd

    for path in index_files:
        try:
            df = pd.read_parquet(path)
        except Exception:  # noqa: BLE001 - unreadable or foreign file: try the next one
            continue
        cols = {c.rsplit(".", 1)[-1]: c for c in df.columns if c.startswith("host_timings_s.")}
        if "status" in df:
            df = df[df["status"].astype(str) == "ok"]
        if df.empty or "run" not in cols or "build" not in cols:
            continue
        per_cand = _median(df, cols, "codegen") + _median(df, cols, "build")
        per_run = _median(df, cols, "run") + _median(df, cols, "parse") + WRITE_S
        return per_cand, per_run, f"medians of {len(df)} runs in {path}"
    return None


def estimate(candidates: int, repeat: int, out_root: Path | None = None,
             experiment: str | None = None) -> Estimate:
    files: list[Path] = []
    if out_root is not None and Path(out_root).is_dir():
        if experiment:
            files.append(Path(out_root) / experiment / "index.parquet")
        files += sorted(Path(out_root).glob("*/index.parquet"))
    found = measured_costs([f for f in files if f.is_file()])
    if found:
        per_cand, per_run, source = found
    else:
        per_cand, per_run = DEFAULT_PER_CANDIDATE_S, DEFAULT_PER_RUN_S
        source = "default per-run costs (no index.parquet with host timings under --out)"
    return Estimate(candidates, candidates * repeat, per_cand, per_run, source)
