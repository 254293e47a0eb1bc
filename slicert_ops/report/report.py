"""A report per sweep: PNG plots + summary.md + summary.html + candidates.csv.

    paths = write_report(build_index("results"), Path("reports/conv2d"), "conv2d_5x5_latency")

``summary.html`` is self-contained: its plots are embedded as ``data:`` URIs, so it renders
the same from disk, from a copy mailed around, and in MLflow's artifact preview (which
cannot resolve relative image paths). The PNG files are written beside it too (summary.md
links them).

Only valid runs (status ok, correct == 1, validation passed when present) enter the
figures and rankings; the summary counts the others. Per candidate: kernel cycles = mean
over its valid repeats, worst preemption latency = max over them.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import pandas as pd

from slicert_ops.report import plots
from slicert_ops.report.answers import answers, experiment_objective
from slicert_ops.report.fmt import cell
from slicert_ops.report.index import schedule_columns
from slicert_ops.report.timeline import report_timelines

TOP_N = 5


def candidate_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate from valid runs (sorted by kernel cycles)."""
    params = schedule_columns(runs)
    if runs.empty:
        return pd.DataFrame(columns=["candidate_id", *params, "runs", "kernel_cycles",
                                     "max_preemption_latency_cycles"])
    agg: dict[str, tuple[str, str]] = {
        "runs": ("run", "count"),
        "kernel_cycles": ("kernel_cycles", "mean"),
        "kernel_cycles_min": ("kernel_cycles", "min"),
        "kernel_cycles_max": ("kernel_cycles", "max"),
        "max_preemption_latency_cycles": ("max_preemption_latency_cycles", "max"),
    }
    optional = {"wall_cycles": ("wall_cycles", "mean"),
                "irq_latency_max_cycles": ("irq_latency_max_cycles", "max"),
                "deadline_misses": ("deadline_misses", "sum"),
                "text_bytes": ("text_bytes", "max")}
    agg.update({k: v for k, v in optional.items() if v[0] in runs})
    numeric = runs.copy()
    for _, (col, _) in agg.items():
        if col != "run":
            numeric[col] = pd.to_numeric(numeric[col], errors="coerce")
    first = runs.groupby("candidate_id", sort=False)[params].first()
    table = numeric.groupby("candidate_id", sort=False).agg(**agg)
    table = first.join(table).reset_index()
    table["pareto"] = plots.pareto_mask(table["kernel_cycles"].to_numpy(float),
                                        table["max_preemption_latency_cycles"].to_numpy(float))
    return table.sort_values(["kernel_cycles", "candidate_id"]).reset_index(drop=True)


def _display(table: pd.DataFrame) -> pd.DataFrame:
    cols = {"candidate_id": "candidate"}
    for c in table.columns:
        if c.startswith("schedule."):
            cols[c] = c.split(".", 1)[1]
    cols.update({"runs": "runs", "kernel_cycles": "kernel cycles (mean)",
                 "max_preemption_latency_cycles": "worst preemption (cycles)",
                 "wall_cycles": "wall cycles (mean)",
                 "irq_latency_max_cycles": "worst IRQ latency (cycles)",
                 "deadline_misses": "deadline misses"})
    keep = [c for c in cols if c in table.columns]
    return table[keep].rename(columns=cols)


def markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows]) + "\n"


def html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    return df.map(cell).to_html(index=False, escape=True, border=0, classes="t")


def _counts(exp_runs: pd.DataFrame) -> dict[str, int]:
    status = exp_runs["status"].astype(str)
    ok = status == "ok"
    correct = pd.to_numeric(exp_runs.get("correct"), errors="coerce")
    validation = exp_runs.get("validation_success",
                              pd.Series(pd.NA, index=exp_runs.index, dtype="boolean"))
    val_failed = validation.astype("boolean").eq(False).fillna(False).astype(bool)
    return {"runs": len(exp_runs), "valid": int(exp_runs["valid"].astype(bool).sum()),
            "failed": int((~ok).sum()),
            "incorrect": int((ok & (correct != 1) & correct.notna()).sum()),
            "validation_failed": int((ok & val_failed).sum())}


def data_uri(path: Path) -> str:
    """The PNG at path as a ``data:image/png;base64,...`` URI (embedded in summary.html)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def write_report(index_df: pd.DataFrame, out_dir: str | Path, experiment: str,
                 layers: pd.DataFrame | None = None) -> list[Path]:
    """Plots and summaries of one experiment (sweep) into out_dir; returns the files written.
    A network experiment adds its network candidates and per-layer figures (``layers``: its
    per-layer rows when the caller has them); the candidate tables and parameter plots are
    then its task candidates'."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_runs = index_df[index_df["experiment"] == experiment]
    net_figures: list[tuple[str, Path]] = []
    net_sections: list[tuple[str, pd.DataFrame]] = []
    exp_runs = all_runs
    if "operator.type" in all_runs and (all_runs["operator.type"] == "network").any():
        from slicert_ops.network.report import network_report

        exp_dir = Path(all_runs["run_dir"].iloc[0]).parent  # the run folders' experiment
        net_figures, net_sections = network_report(all_runs, exp_dir, out_dir, experiment,
                                                   layers)
        exp_runs = all_runs[all_runs["operator.type"] != "network"]
    runs = exp_runs[exp_runs["valid"].astype(bool)]
    params = [p for p in schedule_columns(runs) if runs[p].notna().any()]
    varied = [p for p in params if runs[p].nunique() > 1]
    constant = {p.split(".", 1)[1]: runs[p].dropna().iloc[0] for p in params if p not in varied}
    cand = candidate_table(runs)
    written: list[Path] = []
    figures: list[tuple[str, Path]] = []

    if not cand.empty:
        for p in varied:
            name = p.split(".", 1)[1]
            path = plots.plot_cycles_vs_param(cand, p, out_dir / f"cycles_vs_{name}.png",
                                              experiment)
            figures.append((f"Kernel cycles vs {name}", path))
        path = plots.plot_pareto(cand, params, out_dir / "pareto_kernel_vs_preemption.png",
                                 experiment)
        figures.append(("Kernel cycles vs worst preemption latency (Pareto front)", path))
        group = next((p for p in params if p.endswith(".slice")), None)
        path = plots.plot_irq_latency(runs, out_dir / "irq_latency.png", experiment, group)
        figures.append(("IRQ latency distribution", path))
        pred_col = plots.prediction_column(runs)
        if pred_col:
            path = plots.plot_predicted_vs_measured(
                runs, pred_col, out_dir / "cost_model_predicted_vs_measured.png", experiment)
            figures.append(("Cost model: predicted vs measured kernel cycles", path))
        written += [p for _, p in figures]
        csv = out_dir / "candidates.csv"
        cand.to_csv(csv, index=False)
        written.append(csv)

    figures = net_figures + figures
    written += [p for _, p in net_figures]
    counts = _counts(all_runs)
    by_kernel = cand.head(TOP_N)
    by_preempt = cand.sort_values(["max_preemption_latency_cycles", "kernel_cycles",
                                   "candidate_id"]).head(TOP_N)
    pareto = cand[cand["pareto"]].sort_values("kernel_cycles") if not cand.empty else cand
    failures = all_runs[~all_runs["valid"].astype(bool)]
    sections = list(net_sections)
    if not cand.empty or not net_sections:
        what = " (task candidates, each layer alone)" if net_sections else ""
        sections += [
            (f"Best by kernel cycles (top {TOP_N}){what}", _display(by_kernel)),
            (f"Best by worst preemption latency (top {TOP_N}){what}", _display(by_preempt)),
            (f"Pareto set: kernel cycles vs worst preemption latency ({len(pareto)}){what}",
             _display(pareto)),
        ]
    cols = [c for c in ("run", "candidate_id", "status", "correct", "validation_success",
                        "error") if c in failures]
    fail_table = failures[cols].head(50)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    n_cand = all_runs["candidate_id"].nunique() if "candidate_id" in all_runs else len(cand)
    intro = (f"{counts['runs']} runs, {counts['valid']} valid over {n_cand} candidates; "
             f"{counts['failed']} failed, {counts['incorrect']} with wrong output, "
             f"{counts['validation_failed']} failed validation. Cycles are {plots.CYCLES}; "
             f"per candidate, kernel cycles are the mean over its valid repeats and the "
             f"preemption latency the worst over them.")
    if constant:
        intro += " Fixed in this sweep: " + ", ".join(f"{k} = {cell(v)}"
                                                      for k, v in constant.items()) + "."

    exp_dir = Path(all_runs["run_dir"].iloc[0]).parent if len(all_runs) else out_dir.parent
    said = answers(all_runs, experiment_objective(exp_dir))  # one sentence each
    timelines = report_timelines(all_runs, [by_kernel, by_preempt], out_dir)
    written += [p for _, h, j in timelines for p in (h, j)]

    md = [f"# Sweep report: {experiment}\n", f"_Generated {stamp}._ {intro}\n"]
    if said:
        md += ["## Answers\n", *[f"- {a}" for a in said], ""]
    for title, table in sections:
        md += [f"## {title}\n", markdown_table(table)]
    if not fail_table.empty:
        md += [f"## Runs left out ({len(failures)})\n", markdown_table(fail_table)]
    if timelines:
        md += ["## Timelines of the best candidates\n",
               *[f"- [{t}](timelines/{h.name}) ([Chrome trace JSON](timelines/{j.name}) for "
                 "ui.perfetto.dev)" for t, h, j in timelines], ""]
    md.append("## Plots\n")
    md += [f"### {title}\n\n![{title}]({path.name})\n" for title, path in figures]
    md_path = out_dir / "summary.md"
    md_path.write_text("\n".join(md))
    written.append(md_path)

    e = html.escape
    body = [f"<h1>Sweep report: {e(experiment)}</h1>", f"<p><em>Generated {stamp}.</em> "
            f"{e(intro)}</p>"]
    if said:
        body += ["<h2>Answers</h2><ul class='answers'>",
                 *[f"<li>{e(a)}</li>" for a in said], "</ul>"]
    for title, table in sections:
        body += [f"<h2>{e(title)}</h2>", html_table(table)]
    if not fail_table.empty:
        body += [f"<h2>Runs left out ({len(failures)})</h2>", html_table(fail_table)]
    if timelines:
        body += ["<h2>Timelines of the best candidates</h2><ul class='timelines'>",
                 *[f"<li><a href='timelines/{e(h.name)}'>{e(t)}</a> (<a href='timelines/"
                   f"{e(j.name)}'>Chrome trace JSON</a> for ui.perfetto.dev)</li>"
                   for t, h, j in timelines], "</ul>"]
    body.append("<h2>Plots</h2>")
    body += [f'<figure><img src="{data_uri(p)}" alt="{e(t)}" title="{e(p.name)}">'
             f"<figcaption>{e(t)} ({e(p.name)})</figcaption></figure>" for t, p in figures]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th"
             "{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}")
    html_doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(experiment)}"
                f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    html_path = out_dir / "summary.html"
    html_path.write_text(html_doc)
    written.append(html_path)
    return written
