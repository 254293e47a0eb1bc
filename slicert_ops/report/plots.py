"""Sweep plots (PNG). Uses matplotlib's object API (no pyplot state, no display needed).

Inputs are the per-candidate table from ``report.candidate_table`` (``kernel_cycles`` =
mean over valid repeats, ``max_preemption_latency_cycles`` = worst over repeats) and the
valid runs of the index.

A plot is drawn only when its inputs changed: each PNG has a content key beside it
(``.<name>.png.key``: a hash of the data plotted, the other arguments, this module's code
and the matplotlib version); a PNG whose key matches is kept as it is (a re-render would
write the same bytes). matplotlib is imported only when something is drawn.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from slicert_ops.rundir import key_is_current, write_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CYCLES = "modelled cycles"  # of the run's core (cm3-v2, cm4-v1: qemu/cycle_model.md)
PARAM_LABELS = {
    "tile_size": "tile_size (macro-tile, outputs per tiled dimension)",
    "micro_tile": "micro_tile (preemption granule, outputs per tiled dimension)",
    "unroll": "unroll (inner-loop unroll factor)",
    "slice": "slice (slice budget, µs of virtual time)",
}
DPI = 110
PAD_INCHES = 0.1  # matplotlib's savefig.pad_inches around the tight box


_CODE_KEY: str | None = None
F = TypeVar("F", bound=Callable[..., Path])


def _code_key() -> str:
    global _CODE_KEY
    if _CODE_KEY is None:
        from importlib.metadata import version

        h = hashlib.sha256(Path(__file__).read_bytes())
        h.update(f"matplotlib {version('matplotlib')} dpi {DPI}".encode())
        _CODE_KEY = h.hexdigest()
    return _CODE_KEY


def _digest(h: Any, value: Any) -> None:
    """Feed value into the hash h: frames by column (name, dtype, index and values)."""
    if isinstance(value, pd.DataFrame):
        h.update(f"frame {value.shape} {list(map(str, value.columns))}".encode())
        h.update(pd.util.hash_pandas_object(value.index).to_numpy().tobytes())
        for col in value.columns:
            series = value[col]
            h.update(f"{col}:{series.dtype}".encode())
            try:
                hashed = pd.util.hash_pandas_object(series, index=False)
            except TypeError:  # unhashable or mixed objects: by their text
                hashed = pd.util.hash_pandas_object(series.map(repr), index=False)
            h.update(hashed.to_numpy().tobytes())
    else:
        h.update(json.dumps(value, default=repr, sort_keys=True).encode())


@functools.cache
def _module_key(source: str) -> str:
    """The hash of the file a plot function is defined in (outside this module: a change of
    its drawing code must redraw it too)."""
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError:
        return ""


def content_key(name: str, args: dict[str, Any], source: str | None = None) -> str:
    """The key of one plot: its function, the code, every argument's content."""
    more = _module_key(source) if source and source != __file__ else ""
    h = hashlib.sha256(f"{name}\0{_code_key()}\0{more}".encode())
    for k in sorted(args):
        h.update(f"\0{k}=".encode())
        _digest(h, args[k])
    return h.hexdigest()


def cached_png(fn: F) -> F:
    """Draw ``fn(..., path, ...)`` only when no PNG with the same content key is at path."""
    sig = inspect.signature(fn)
    source = inspect.getsourcefile(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        path = Path(bound.arguments["path"])
        key = content_key(fn.__name__, {k: v for k, v in bound.arguments.items()
                                         if k != "path"}, source)
        if key_is_current(path, key):
            return path
        out = fn(*args, **kwargs)
        write_key(path, key)
        return out

    return wrapper  # type: ignore[return-value]


def _mpl() -> tuple[Any, Any]:
    """(Figure, EngFormatter), imported on the first plot drawn."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    return Figure, EngFormatter


def param_label(column: str) -> str:
    name = column.split(".", 1)[-1]
    return PARAM_LABELS.get(name, name)


def short_label(row: pd.Series, params: list[str]) -> str:
    return " ".join(f"{_abbrev(p)}{_fmt_value(row[p])}" for p in params)


def _abbrev(column: str) -> str:
    return column.split(".", 1)[-1][:1]


def label_legend(params: list[str]) -> str:
    return "labels: " + ", ".join(f"{_abbrev(p)}={p.split('.', 1)[-1]}" for p in params)


def _fmt_value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points not dominated when minimising both x and y (ties: duplicates all kept)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mask = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        dominated = (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
        mask[i] = not dominated.any()
    return mask


def save_png(fig: Figure, path: Path) -> Path:
    """The figure cropped to its artists, as ``bbox_inches="tight"`` does, but from one
    layout pass: "tight" draws the whole figure once more first (a third of a plot's time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(DPI)
    box = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer()).padded(PAD_INCHES)
    # zlib level 1: ~0.2 s less per report (5-6 plots) for PNGs ~6 % larger
    fig.savefig(path, dpi=DPI, bbox_inches=box, pil_kwargs={"compress_level": 1})
    return path


def _sorted_values(series: pd.Series) -> list:
    values = series.dropna().unique().tolist()
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _maybe_log(ax, values: np.ndarray) -> None:
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 30:
        ax.set_yscale("log")


@cached_png
def plot_cycles_vs_param(cand: pd.DataFrame, param: str, path: Path, experiment: str) -> Path:
    """Kernel cycles of every candidate against one schedule parameter (categorical x)."""
    Figure, EngFormatter = _mpl()
    values = _sorted_values(cand[param])
    pos = {v: i for i, v in enumerate(values)}
    x = cand[param].map(pos).to_numpy(dtype=float)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.12, 0.12, len(x))
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    ax.scatter(x + jitter, cand["kernel_cycles"], s=14, alpha=0.45, color="tab:blue",
               label="candidate (mean over repeats)")
    grouped = cand.groupby(param)
    med = grouped["kernel_cycles"].median()
    best = grouped["kernel_cycles"].min()
    xs = [pos[v] for v in med.index]
    ax.plot(xs, med.to_numpy(), "-o", color="tab:blue", lw=2, label="median kernel cycles")
    ax.plot(xs, best.to_numpy(), "--v", color="tab:green", lw=1.5,
            label="best kernel cycles")
    if "wall_cycles" in cand and cand["wall_cycles"].notna().any():
        wall = grouped["wall_cycles"].median()
        ax.plot([pos[v] for v in wall.index], wall.to_numpy(), ":s", color="tab:orange",
                lw=1.5, label="median wall cycles (incl. preemption)")
    ax.set_xticks(range(len(values)), [_fmt_value(v) for v in values])
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel(param_label(param))
    ax.set_ylabel(f"cycles ({CYCLES})")
    _maybe_log(ax, cand["kernel_cycles"].to_numpy(dtype=float))
    ax.yaxis.set_major_formatter(EngFormatter())
    ax.set_title(f"{experiment}: kernel cycles vs {param.split('.', 1)[-1]}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_png(fig, path)


@cached_png
def plot_pareto(cand: pd.DataFrame, params: list[str], path: Path, experiment: str) -> Path:
    """Kernel cycles vs worst preemption latency; the Pareto front (both minimised) in red."""
    Figure, EngFormatter = _mpl()
    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    x = cand["kernel_cycles"].to_numpy(dtype=float)
    y = cand["max_preemption_latency_cycles"].to_numpy(dtype=float)
    front = pareto_mask(x, y)
    color_by = next((p for p in params if p.endswith(".micro_tile")), params[0] if params else None)
    if color_by is not None:
        values = _sorted_values(cand[color_by])
        palette = [f"C{i % 10}" for i in range(len(values))]
        for v, c in zip(values, palette, strict=True):
            m = (cand[color_by] == v).to_numpy() & ~front
            ax.scatter(x[m], y[m], s=18, alpha=0.55, color=c,
                       label=f"{color_by.split('.', 1)[-1]} = {_fmt_value(v)}")
    else:
        ax.scatter(x[~front], y[~front], s=18, alpha=0.55, color="tab:blue", label="candidate")
    order = np.argsort(x[front])
    fx, fy = x[front][order], y[front][order]
    ax.step(fx, fy, where="post", color="red", lw=1.5, alpha=0.8)
    ax.scatter(fx, fy, s=60, facecolors="none", edgecolors="red", linewidths=2,
               label=f"Pareto front ({front.sum()})", zorder=3)
    front_rows = cand[front].iloc[order]
    if len(front_rows) <= 15 and params:
        for i, ((_, row), px, py) in enumerate(zip(front_rows.iterrows(), fx, fy, strict=True)):
            ax.annotate(short_label(row, params), (px, py), textcoords="offset points",
                        xytext=(6, 6 if i % 2 == 0 else -12), fontsize=7, color="darkred")
        ax.text(0.99, 0.01, label_legend(params), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7, color="darkred")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel(f"kernel cycles (mean over repeats, {CYCLES})")
    ax.set_ylabel("worst preemption latency (max over repeats, cycles)")
    ax.set_title(f"{experiment}: kernel cycles vs worst preemption latency")
    if not np.any(y > 0):
        ax.set_ylim(-1, 10)
        ax.text(0.5, 0.5, "no preemption latency recorded\n(no simulated IRQ load)",
                transform=ax.transAxes, ha="center", va="center", fontsize=11, color="gray")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_png(fig, path)


@cached_png
def plot_irq_latency(runs: pd.DataFrame, path: Path, experiment: str,
                     group_by: str | None = None) -> Path:
    """Distribution over runs of the per-run IRQ latency statistics (+ max by a parameter)."""
    Figure, _ = _mpl()
    stats = [("irq_latency_mean_cycles", "mean"), ("irq_latency_p99_cycles", "p99"),
             ("irq_latency_max_cycles", "max")]
    loaded = runs[runs.get("irq_count", pd.Series(0, index=runs.index)).fillna(0) > 0]
    fig = Figure(figsize=(11, 4.6))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    if loaded.empty:
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no interrupts in this sweep\n(runner.simulate_irq_load off)",
                    transform=ax.transAxes, ha="center", va="center", color="gray")
    else:
        data = [loaded[c].dropna().to_numpy(dtype=float) for c, _ in stats if c in loaded]
        lo = min(d.min() for d in data if len(d))
        hi = max(d.max() for d in data if len(d))
        bins = np.linspace(lo, hi + 1, min(40, max(5, int(hi - lo) + 2)))
        for (col, name), color in zip(stats, ("tab:blue", "tab:orange", "tab:red"), strict=True):
            if col in loaded:
                ax1.hist(loaded[col].dropna(), bins=bins, histtype="step", lw=2, color=color,
                         label=f"per-run {name}")
        ax1.set_xlabel(f"IRQ latency (assertion to first ISR instruction, {CYCLES})")
        ax1.set_ylabel("runs")
        ax1.legend(fontsize=8)
        ax1.grid(True, alpha=0.3)
        if group_by and group_by in loaded:
            values = _sorted_values(loaded[group_by])
            groups = [loaded.loc[loaded[group_by] == v, "irq_latency_max_cycles"].dropna()
                      for v in values]
            ax2.boxplot(groups, tick_labels=[_fmt_value(v) for v in values])
            ax2.set_xlabel(param_label(group_by))
        else:
            ax2.boxplot([loaded["irq_latency_max_cycles"].dropna()], tick_labels=["all runs"])
        ax2.set_ylabel("worst IRQ latency per run (cycles)")
        ax2.grid(True, alpha=0.3)
        ax2.set_title("worst IRQ latency per run", fontsize=10)
    n = len(loaded)
    fig.suptitle(f"{experiment}: IRQ latency distribution over {n} run{'s' * (n != 1)}")
    return save_png(fig, path)


PREDICTION_COLUMNS = ("prediction.predicted_kernel_cycles", "prediction.kernel_cycles",
                      "cost_model.predicted_kernel_cycles")


def prediction_column(runs: pd.DataFrame) -> str | None:
    """The index column holding the cost model's kernel-cycle prediction, if recorded."""
    return next((c for c in PREDICTION_COLUMNS if c in runs and runs[c].notna().any()), None)


@cached_png
def plot_predicted_vs_measured(runs: pd.DataFrame, column: str, path: Path,
                               experiment: str) -> Path:
    """The champion's predicted kernel cycles (recorded before the run) against the measure."""
    Figure, EngFormatter = _mpl()
    from scipy import stats

    data = runs[[column, "kernel_cycles"]].apply(pd.to_numeric, errors="coerce").dropna()
    version_col = next((c for c in ("prediction.version", "cost_model.version") if c in runs),
                       None)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    if version_col:
        versions = runs.loc[data.index, version_col].astype(str)
        for i, v in enumerate(sorted(versions.unique())):
            m = (versions == v).to_numpy()
            ax.scatter(data["kernel_cycles"][m], data[column][m], s=16, alpha=0.6,
                       color=f"C{i % 10}", label=f"model v{v}")
    else:
        ax.scatter(data["kernel_cycles"], data[column], s=16, alpha=0.6, label="run")
    lo = float(data.min().min()) if not data.empty else 0.0
    hi = float(data.max().max()) if not data.empty else 1.0
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = measured")
    rho = stats.spearmanr(data[column], data["kernel_cycles"]).statistic if len(data) > 2 \
        else float("nan")
    ax.set_xlabel(f"measured kernel cycles ({CYCLES})")
    ax.set_ylabel("predicted kernel cycles (cost model, before the run)")
    ax.set_title(f"{experiment}: cost model vs measurement (Spearman {rho:.3f}, "
                 f"{len(data)} runs)")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.yaxis.set_major_formatter(EngFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)
