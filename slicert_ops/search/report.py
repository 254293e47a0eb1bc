"""What a search shows: the best schedule, the budget spent, the best-so-far curve.

Written to ``results/<experiment>/search/``: ``trials.jsonl`` (as the search goes),
``summary.json``, ``curve.csv`` and ``curve.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

from slicert_ops.search.tuner import SearchResult


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _sched(s: dict) -> str:
    if s.get("source") == "meta_schedule":
        if "kernel_sha" not in s:
            return "TVM schedule (not built)"
        return (f"TVM schedule {s['kernel_sha'][:8]}: micro-tile loop {s['micro_tile_loop']} "
                f"({s['micro_tile_outputs']} outputs, {s['yield_checks']} checks)")
    keys = [k for k in ("tile_size", "micro_tile", "unroll", "slice") if k in s]
    keys += [k for k in s if k not in keys]
    return " ".join(f"{k}={s[k]}" for k in keys)


def format_summary(res: SearchResult, max_rows: int = 24) -> str:
    """The end-of-search text: best, budget, and the best-so-far table."""
    obj = res.objective
    lines = [f"{res.experiment}: search {res.strategy}, {obj.describe()}",
             f"  space {res.space_size} candidates, budget {res.budget}: "
             f"{len(res.trials)} trials = {res.measured} measured now + {res.replayed} "
             f"replayed from run folders; {len(res.failed)} failed, "
             f"{len(res.infeasible)} infeasible; {res.elapsed_s:.1f} s"]
    best = res.best
    if best is None:
        lines.append("  no feasible candidate found"
                     + (" (every measured candidate breaks a bound)" if res.infeasible else ""))
    else:
        runs = ", ".join(f"run_{n:04d}" for n in best.runs[:3])
        lines.append(f"  best: {obj.metric} {_fmt(best.value)} at trial {best.number}: "
                     f"{_sched(best.schedule)} (candidate {best.candidate_id}"
                     + (f", {runs}" if runs else "") + ")")
        if obj.bounds:
            shown = ", ".join(f"{b.metric} {_fmt(best.metrics.get(b.metric))} <= {b.limit:g}"
                              for b in obj.bounds)
            lines.append(f"  bounds of the best: {shown}")
    curve = res.curve()
    if not curve:
        return "\n".join(lines)
    final = best.value if best else None
    rows = _rows(len(curve), max_rows)
    lines += ["", f"  {'trials':>6}  {'best ' + obj.metric:>22}  {'vs final':>8}  "
                  f"{'this trial':>14}  {'source':<8} schedule"]
    for n in rows:
        t = res.trials[n - 1]
        b = curve[n - 1][1]
        ratio = f"{b / final:8.3f}" if b is not None and final else f"{'-':>8}"
        this = _fmt(t.value) if t.status == "ok" else "failed"
        if t.status == "ok" and not t.feasible:
            this += "*"
        lines.append(f"  {n:>6}  {_fmt(b):>22}  {ratio}  {this:>14}  {t.source:<8} "
                     f"{_sched(t.schedule)}")
    if res.infeasible:
        lines.append("  (* infeasible: breaks a bound of the objective; never the best)")
    return "\n".join(lines)


def _rows(n: int, max_rows: int) -> list[int]:
    if n <= max_rows:
        return list(range(1, n + 1))
    step = n / (max_rows - 1)
    picks = sorted({max(1, round(i * step)) for i in range(max_rows - 1)} | {1, n})
    return picks


def write_outputs(res: SearchResult, out_dir: Path) -> dict[str, Path]:
    """summary.json, curve.csv, curve.png in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out_dir / "summary.json", "csv": out_dir / "curve.csv",
             "png": out_dir / "curve.png"}
    paths["summary"].write_text(json.dumps(res.to_dict(), indent=1, sort_keys=True) + "\n")
    csv = ["trial,best_so_far,value,feasible,status,source,candidate_id"]
    for (n, b), t in zip(res.curve(), res.trials, strict=True):
        csv.append(f"{n},{'' if b is None else b},{'' if t.value is None else t.value},"
                   f"{int(t.feasible)},{t.status},{t.source},{t.candidate_id}")
    paths["csv"].write_text("\n".join(csv) + "\n")
    plot_curves({res.strategy: res}, paths["png"],
                title=f"{res.experiment}: {res.objective.describe()}")
    return paths


def plot_curves(results: dict[str, SearchResult], path: Path, title: str = "",
                reference: float | None = None) -> Path:
    """Best-so-far against trials, one line per search; infeasible trials marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, res in results.items():
        curve = res.curve()
        xs = [n for n, b in curve if b is not None]
        ys = [b for _, b in curve if b is not None]
        if xs:
            ax.step(xs, ys, where="post", label=f"{label} (best {ys[-1]:,.0f})")
        ok = [(t.number, t.value) for t in res.trials if t.status == "ok" and t.feasible]
        bad = [(t.number, t.value) for t in res.trials if t.status == "ok" and not t.feasible]
        if len(results) == 1 and ok:
            ax.scatter(*zip(*ok, strict=True), s=9, alpha=0.35, label="measured (feasible)")
        if len(results) == 1 and bad:
            ax.scatter(*zip(*bad, strict=True), s=14, marker="x", alpha=0.6,
                       label="measured (infeasible)")
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1,
                   label=f"true best {reference:,.0f}")
    first = next(iter(results.values()), None)
    metric = first.objective.metric if first else "objective"
    ax.set_xlabel("measurements (trials)")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title(title or "search: best so far", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
