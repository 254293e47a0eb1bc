"""Great Expectations 1.x validation of run folders and result tables.

Suites are versioned JSON files under ``expectations/`` (or ``$SLICERT_EXPECTATIONS_DIR``):
``trace_events.json`` (one row per trace event), ``trace_metrics.json`` (one row: metrics +
derived consistency columns), ``results_table.json`` (the results index). Each expectation's
``meta.name`` is the short name reported in ``failed_expectations`` ("suite/name").

One ephemeral GX context per process (created on first use, reused; ~3 s to import GX).
``validate_run`` writes ``validation.json`` and ``validation.html`` into the run folder.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from slicert_ops.validate.frames import events_frame, parse_cycles_txt, summary_frame

REPORT_JSON = "validation.json"
REPORT_HTML = "validation.html"
SCHEMA = "slicert-validation/1"

SUITE_EVENTS = "trace_events"
SUITE_METRICS = "trace_metrics"
SUITE_TABLE = "results_table"


@dataclass
class ValidationResult:
    success: bool
    failed_expectations: list[str]
    report_html: Path | None
    report_json: Path | None
    statistics: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> ValidationResult:
        data = json.loads(Path(path).read_text())
        html_path = Path(path).with_name(REPORT_HTML)
        return cls(bool(data.get("success")), list(data.get("failed_expectations") or []),
                   html_path if html_path.exists() else None, Path(path),
                   dict(data.get("statistics") or {}))

    def summary(self, limit: int = 5) -> str:
        if self.success:
            return "validation passed"
        more = len(self.failed_expectations) - limit
        names = ", ".join(self.failed_expectations[:limit]) + (f" (+{more} more)" if more > 0
                                                               else "")
        return f"validation failed: {names}"


def expectations_dir() -> Path:
    env = os.environ.get("SLICERT_EXPECTATIONS_DIR")
    if env:
        return Path(env)
    from slicert_ops.services.config import repo_root

    return repo_root() / "expectations"


# ---------------------------------------------------------------------------------------
# the per-process GX context
# ---------------------------------------------------------------------------------------
class _GX:
    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.version = gx.__version__
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas("slicert")
        self.batch_defs: dict[str, Any] = {}
        self.suites: dict[str, tuple[int, dict, dict]] = {}
        self.lock = threading.Lock()

    def batch_def(self, asset: str):
        if asset not in self.batch_defs:
            self.batch_defs[asset] = self.source.add_dataframe_asset(asset) \
                .add_batch_definition_whole_dataframe("whole")
        return self.batch_defs[asset]

    def suite(self, name: str, columns: set[str] | None = None):
        """(suite object, suite json) loaded from expectations/<name>.json (cached by mtime).
        Expectations with meta.optional=true whose column is absent are left out."""
        path = expectations_dir() / f"{name}.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise FileNotFoundError(f"expectation suite {path} is missing") from None
        cached = self.suites.get(name)
        if cached is None or cached[0] != mtime:
            cached = (mtime, json.loads(path.read_text()), {})
            self.suites[name] = cached
        _, data, built = cached
        exps, skipped = [], []
        for i, exp in enumerate(data["expectations"]):
            meta = exp.get("meta") or {}
            if meta.get("optional") and columns is not None:
                needed = [exp["kwargs"].get(k) for k in ("column", "column_A", "column_B")]
                needed += list(exp["kwargs"].get("column_list") or [])
                if any(c is not None and c not in columns for c in needed):
                    skipped.append(i)
                    continue
            exps.append(exp)
        key = tuple(skipped)
        if key not in built:
            built[key] = self.gx.ExpectationSuite(
                name=data["name"],
                expectations=[{"type": e["type"], "kwargs": dict(e["kwargs"]),
                               "meta": dict(e.get("meta") or {})} for e in exps],
                meta=dict(data.get("meta") or {}))
        return built[key], data

    def run(self, asset: str, suite_name: str, df: pd.DataFrame) -> dict:
        with self.lock:
            suite, data = self.suite(suite_name, set(map(str, df.columns)))
            batch = self.batch_def(asset).get_batch(batch_parameters={"dataframe": df})
            result = batch.validate(suite)
        out = result.to_json_dict()
        out["suite_version"] = (data.get("meta") or {}).get("version")
        return out


_GX_INSTANCE: _GX | None = None
_GX_LOCK = threading.Lock()


def gx_context() -> _GX:
    global _GX_INSTANCE
    with _GX_LOCK:
        if _GX_INSTANCE is None:
            _GX_INSTANCE = _GX()
        return _GX_INSTANCE


def _failed_names(suite: str, result: dict) -> list[str]:
    names = []
    for r in result.get("results", []):
        if r.get("success"):
            continue
        cfg = r.get("expectation_config") or {}
        meta = cfg.get("meta") or {}
        name = meta.get("name")
        if not name:
            kw = cfg.get("kwargs") or {}
            col = kw.get("column") or kw.get("column_A") or ""
            name = f"{cfg.get('type')}({col})"
        names.append(f"{suite}/{name}")
    return names


# ---------------------------------------------------------------------------------------
# run folders
# ---------------------------------------------------------------------------------------
def _load_json(path: Path) -> tuple[dict | None, str | None]:
    if not path.exists():
        return None, f"{path.name} is missing"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{path.name} is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, None


def validate_run(run_dir: Path | str, *, write: bool = True) -> ValidationResult:
    """Validate one run folder with the trace suites; write validation.json / .html into it.

    A run whose manifest says status "failed", or whose trace is missing or unreadable,
    fails validation without calling GX (the report says why).
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    preflight: list[str] = []
    suites: dict[str, dict] = {}
    manifest, err = _load_json(run_dir / "manifest.json")
    if err:
        preflight.append(f"preflight/manifest: {err}")
        manifest = {}
    if manifest.get("status") not in (None, "ok"):
        why = manifest.get("error") or "no error message"
        preflight.append(f"preflight/run_status: status is {manifest.get('status')!r}: {why}")
    trace, err = _load_json(run_dir / "qemu_trace.json")
    if err:
        preflight.append(f"preflight/trace: {err}")
    tvm, err = _load_json(run_dir / "tvm_config.json")
    features = (tvm or {}).get("features") or {}
    if err:
        preflight.append(f"preflight/tvm_config: {err}")
    cyc_path = run_dir / "cycles.txt"
    cycles = parse_cycles_txt(cyc_path.read_text()) if cyc_path.exists() else None
    if cycles is None and trace is not None:
        preflight.append("preflight/cycles_txt: cycles.txt is missing")

    if trace is not None:
        ctx = gx_context()
        ev = events_frame(trace)
        suites[SUITE_EVENTS] = ctx.run("trace_events", SUITE_EVENTS, ev)
        summ = summary_frame(trace, ev, manifest, features, cycles)
        suites[SUITE_METRICS] = ctx.run("trace_summary", SUITE_METRICS, summ)

    failed = list(preflight)
    for name, res in suites.items():
        failed += _failed_names(name, res)
    success = not failed
    stats = {
        "evaluated": sum(r["statistics"]["evaluated_expectations"] for r in suites.values()),
        "failed": len(failed),
        "seconds": round(time.perf_counter() - t0, 4),
    }
    report = {
        "schema": SCHEMA,
        "success": success,
        "run_dir": str(run_dir),
        "run": manifest.get("run", run_dir.name),
        "experiment": manifest.get("experiment"),
        "candidate_id": manifest.get("candidate_id"),
        "repeat": manifest.get("repeat"),
        "failed_expectations": failed,
        "preflight": preflight,
        "statistics": stats,
        "validated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "gx_version": gx_context().version if suites else None,
        "suites": suites,
    }
    json_path = run_dir / REPORT_JSON
    html_path = run_dir / REPORT_HTML
    if write:
        _atomic_write(json_path, json.dumps(report, indent=1, default=str))
        _atomic_write(html_path, render_html(report))
    return ValidationResult(success, failed, html_path if write else None,
                            json_path if write else None, stats)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# results table
# ---------------------------------------------------------------------------------------
def validate_results_table(df: pd.DataFrame, out_dir: Path | str | None = None
                           ) -> ValidationResult:
    """Validate the results index (one row per run) with ``results_table.json``.
    Expectations marked optional in the suite are skipped when their column is absent.
    Writes results_validation.json/.html into out_dir when given."""
    t0 = time.perf_counter()
    res = gx_context().run("results_table", SUITE_TABLE, df)
    failed = _failed_names(SUITE_TABLE, res)
    stats = {"evaluated": res["statistics"]["evaluated_expectations"], "failed": len(failed),
             "rows": int(len(df)), "seconds": round(time.perf_counter() - t0, 4)}
    report = {"schema": SCHEMA, "success": not failed, "run": "results table",
              "failed_expectations": failed, "preflight": [], "statistics": stats,
              "validated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "gx_version": gx_context().version, "suites": {SUITE_TABLE: res}}
    jp = hp = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        jp, hp = out / "results_validation.json", out / "results_validation.html"
        _atomic_write(jp, json.dumps(report, indent=1, default=str))
        _atomic_write(hp, render_html(report))
    return ValidationResult(not failed, failed, hp, jp, stats)


# ---------------------------------------------------------------------------------------
# HTML report (GX 1.x ephemeral contexts have no data docs: a readable table instead)
# ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} .ok{color:#17702b;font-weight:bold} .bad{color:#b00020;font-weight:bold}
code{font-size:.95em} .muted{color:#777}
"""


def _observed(res: dict) -> str:
    r = res.get("result") or {}
    parts = []
    if "observed_value" in r:
        parts.append(f"observed: {r['observed_value']}")
    if r.get("unexpected_count"):
        parts.append(f"unexpected: {r['unexpected_count']} of {r.get('element_count')}")
        sample = r.get("partial_unexpected_list") or []
        if sample:
            parts.append(f"e.g. {sample[:5]}")
        idx = r.get("partial_unexpected_index_list") or []
        if idx:
            parts.append(f"rows {idx[:5]}")
    exc = res.get("exception_info") or {}
    if exc.get("raised_exception"):
        parts.append(f"error: {str(exc.get('exception_message'))[:300]}")
    return "; ".join(str(p) for p in parts)


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "batch_id")


def render_html(report: dict) -> str:
    e = html.escape
    ok = report.get("success")
    head = (f"<h1>Validation: {e(str(report.get('run')))} "
            f"<span class='{'ok' if ok else 'bad'}'>{'PASSED' if ok else 'FAILED'}</span></h1>")
    info = [("experiment", report.get("experiment")), ("candidate", report.get("candidate_id")),
            ("repeat", report.get("repeat")), ("run folder", report.get("run_dir")),
            ("validated at", report.get("validated_at")),
            ("Great Expectations", report.get("gx_version")),
            ("evaluated", (report.get("statistics") or {}).get("evaluated")),
            ("failed", (report.get("statistics") or {}).get("failed"))]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in info
                   if v is not None)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Validation "
             f"{e(str(report.get('run')))}</title><style>{_CSS}</style></head><body>", head,
             f"<table>{rows}</table>"]
    if report.get("preflight"):
        items = "".join(f"<li class='bad'>{e(p)}</li>" for p in report["preflight"])
        parts.append(f"<h2>Checks before the suites</h2><ul>{items}</ul>")
    for suite, res in (report.get("suites") or {}).items():
        st = res.get("statistics") or {}
        parts.append(f"<h2>Suite <code>{e(suite)}</code> (version "
                     f"{e(str(res.get('suite_version')))}): "
                     f"{st.get('successful_expectations')}/{st.get('evaluated_expectations')} "
                     "passed</h2>")
        parts.append("<table><tr><th></th><th>check</th><th>expectation</th><th>arguments"
                     "</th><th>result</th></tr>")
        ordered = sorted(res.get("results", []), key=lambda r: bool(r.get("success")))
        for r in ordered:
            cfg = r.get("expectation_config") or {}
            meta = cfg.get("meta") or {}
            mark = "<span class='ok'>&#10003;</span>" if r.get("success") else \
                "<span class='bad'>&#10007;</span>"
            name = e(str(meta.get("name", "")))
            doc = e(str(meta.get("doc", "")))
            parts.append(
                f"<tr><td>{mark}</td><td><b>{name}</b><br><span class='muted'>{doc}</span></td>"
                f"<td><code>{e(str(cfg.get('type')))}</code></td>"
                f"<td><code>{e(_kwargs_text(cfg.get('kwargs') or {}))}</code></td>"
                f"<td>{e(_observed(r))}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
