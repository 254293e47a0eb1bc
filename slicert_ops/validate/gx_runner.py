"""Great Expectations 1.x validation of run folders and result tables.

Suites are versioned JSON files under ``expectations/`` (or ``$SLICERT_EXPECTATIONS_DIR``):
``trace_events.json`` (one row per trace event), ``trace_metrics.json`` (one row: metrics +
derived consistency columns), ``results_table.json`` (the results index). Each expectation's
``meta.name`` is the short name reported in ``failed_expectations`` ("suite/name").

One ephemeral GX context per process (created on first use, reused; ~3 s to import GX).
``validate_run`` writes ``validation.json`` and ``validation.html`` into the run folder;
``validate_runs`` does the same for many folders with one GX call per suite: the runs' frames
are concatenated, GX evaluates every row (result format COMPLETE), and each run gets the
verdicts of its own rows. That is exact for row-wise expectations (every expectation of the
trace suites is one); a suite with any other kind, a run whose frame lacks a column the suite
names, or a batch where GX raised, is validated run by run instead.
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

import numpy as np
import pandas as pd

from slicert_ops.rundir import write_text_atomic
from slicert_ops.validate.frames import events_frame, parse_cycles_txt, summary_frame

REPORT_JSON = "validation.json"
REPORT_HTML = "validation.html"
SCHEMA = "slicert-validation/1"

SUITE_EVENTS = "trace_events"
SUITE_METRICS = "trace_metrics"
SUITE_TABLE = "results_table"

# Expectations decided row by row (a run's verdict depends on its rows only): suites made of
# these are validated for many runs in one GX call. Everything else (table-level, uniqueness,
# ordering across rows, `mostly`) is validated run by run.
ROW_WISE = frozenset({
    "expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set", "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null", "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex", "expect_column_values_to_match_regex_list",
    "expect_column_values_to_not_match_regex_list",
    "expect_column_pair_values_a_to_be_greater_than_b", "expect_column_pair_values_to_be_equal",
})
PARTIAL = 20  # unexpected values / indices kept per expectation in a run's report


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
    from slicert_ops.paths import repo_root

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
        # the shape of a batched result (_run_concat): GX's batch meta (its load time, the
        # batch definition), null id and empty suite parameters made a report depend on
        # whether its run was validated alone or in a batch, and its load time on the clock
        out.pop("id", None)
        out.pop("suite_parameters", None)
        out["meta"] = {"great_expectations_version": self.version}
        out["suite_version"] = (data.get("meta") or {}).get("version")
        return out

    def run_many(self, asset: str, suite_name: str, frames: list[pd.DataFrame]) -> list[dict]:
        """``run`` for each frame, with one GX call for all frames that allow it."""
        results: list[dict | None] = [None] * len(frames)
        if len(frames) > 1:
            columns = [set(map(str, f.columns)) for f in frames]
            with self.lock:
                suite, data = self.suite(suite_name, set().union(*columns))
            exps = [e for e in suite.expectations]
            needed = set()
            for e in exps:
                kw = e.configuration.kwargs
                needed.update(c for c in (kw.get("column"), kw.get("column_A"),
                                          kw.get("column_B")) if c is not None)
                needed.update(kw.get("column_list") or [])
            batchable = all(e.expectation_type in ROW_WISE
                            and e.configuration.kwargs.get("mostly", 1) in (1, 1.0, None)
                            for e in exps)
            group = [i for i, cols in enumerate(columns) if needed <= cols] if batchable else []
            todo = [group] if len(group) > 1 else []
            while todo:  # a group GX raised on is halved until the culprit runs are alone
                part = todo.pop()
                split = self._run_concat(asset, suite, data, [frames[i] for i in part])
                if split is not None:
                    for i, res in zip(part, split, strict=True):
                        results[i] = res
                elif len(part) > 3:
                    todo += [part[: len(part) // 2], part[len(part) // 2:]]
        for i, res in enumerate(results):
            if res is None:
                results[i] = self.run(asset, suite_name, frames[i])
        return results  # type: ignore[return-value]

    def _run_concat(self, asset: str, suite, data: dict, frames: list[pd.DataFrame]
                    ) -> list[dict] | None:
        """One GX call over the concatenated frames, split back per frame (None when GX
        raised for an expectation: the caller validates the frames one by one)."""
        lengths = np.array([len(f) for f in frames], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        owner = np.repeat(np.arange(len(frames)), lengths)
        df = pd.concat(frames, ignore_index=True)
        with self.lock:
            batch = self.batch_def(asset).get_batch(batch_parameters={"dataframe": df})
            result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
        full = result.to_json_dict()
        for r in full.get("results", []):
            res = r.get("result") or {}
            if _exception_messages(r) or (not r.get("success")
                                          and not res.get("unexpected_index_list")):
                return None  # not attributable to rows: validate run by run
        n = len(frames)
        per_run: list[list[dict]] = [[] for _ in range(n)]
        for r in full.get("results", []):
            cfg = r.get("expectation_config") or {}
            kw = cfg.get("kwargs") or {}
            res = r.get("result") or {}
            idx = [int(i) for i in (res.get("unexpected_index_list") or [])]
            values = res.get("unexpected_list") or []
            if len(values) != len(idx):
                values = [None] * len(idx)
            col = kw.get("column")
            missing = None
            if col is not None and col in df:
                missing = np.bincount(owner, weights=df[col].isna().to_numpy(),
                                      minlength=n).astype(int)
            by_run: dict[int, list[tuple[int, Any]]] = {}
            for gi, v in zip(idx, values, strict=True):
                k = int(owner[gi])
                by_run.setdefault(k, []).append((gi - int(offsets[k]), v))
            for k in range(n):
                bad = by_run.get(k, [])
                count = int(lengths[k])
                miss = int(missing[k]) if missing is not None else 0
                nonmissing = count - miss
                one = {"element_count": count, "unexpected_count": len(bad),
                       "unexpected_percent": (100.0 * len(bad) / nonmissing) if nonmissing
                       else 0.0,
                       "partial_unexpected_list": [v for _, v in bad[:PARTIAL]],
                       "partial_unexpected_index_list": [i for i, _ in bad[:PARTIAL]]}
                if missing is not None:
                    one["missing_count"] = miss
                per_run[k].append({"success": not bad, "expectation_config": cfg,
                                   "result": one, "exception_info": {
                                       "raised_exception": False, "exception_message": None,
                                       "exception_traceback": None}, "meta": {}})
        out = []
        version = (data.get("meta") or {}).get("version")
        for k in range(n):
            ok = sum(1 for r in per_run[k] if r["success"])
            total = len(per_run[k])
            out.append({
                "success": ok == total, "results": per_run[k],
                "suite_name": full.get("suite_name"),
                "statistics": {"evaluated_expectations": total, "successful_expectations": ok,
                               "unsuccessful_expectations": total - ok,
                               "success_percent": 100.0 * ok / total if total else None},
                "meta": {"great_expectations_version": self.version,
                         "batch": {"runs": n, "rows": int(len(df)), "row_offset":
                                   int(offsets[k]), "rows_of_this_run": int(lengths[k])}},
                "suite_version": version})
        return out


_GX_INSTANCE: _GX | None = None
_GX_LOCK = threading.Lock()


def gx_context() -> _GX:
    global _GX_INSTANCE
    with _GX_LOCK:
        if _GX_INSTANCE is None:
            _GX_INSTANCE = _GX()
        return _GX_INSTANCE


def _exception_messages(res: dict) -> list[str]:
    """Messages of the exceptions GX recorded for one expectation result (GX 1.x puts them at
    the top of exception_info, or in a dict per failed metric)."""
    info = res.get("exception_info") or {}
    if not isinstance(info, dict):
        return []
    if "raised_exception" in info:
        return [str(info.get("exception_message"))] if info.get("raised_exception") else []
    return [str(v.get("exception_message")) for v in info.values()
            if isinstance(v, dict) and v.get("raised_exception")]


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
    return validate_runs([run_dir], write=write)[0]


@dataclass
class _Loaded:
    run_dir: Path
    manifest: dict
    preflight: list[str]
    events: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None


def _load_run(run_dir: Path) -> _Loaded:
    preflight: list[str] = []
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
    loaded = _Loaded(run_dir, manifest, preflight)
    if trace is not None:
        try:
            loaded.events = events_frame(trace)
            loaded.summary = summary_frame(trace, loaded.events, manifest, features, cycles)
        except Exception as exc:  # noqa: BLE001 - a malformed trace fails, the batch goes on
            preflight.append(f"preflight/trace_frames: the trace could not be read into "
                             f"frames ({type(exc).__name__}: {exc})")
            loaded.events = loaded.summary = None
    return loaded


def validate_runs(run_dirs: list[Path | str] | tuple[Path | str, ...], *, write: bool = True
                  ) -> list[ValidationResult]:
    """``validate_run`` for many run folders, with one GX call per suite for all of them
    (see the module doc). Results are in the order of ``run_dirs``."""
    t0 = time.perf_counter()
    loaded = [_load_run(Path(d)) for d in run_dirs]
    with_frames = [i for i, ld in enumerate(loaded) if ld.events is not None]
    suites: list[dict[str, dict]] = [{} for _ in loaded]
    if with_frames:
        ctx = gx_context()
        ev = ctx.run_many("trace_events", SUITE_EVENTS, [loaded[i].events for i in with_frames])
        sm = ctx.run_many("trace_summary", SUITE_METRICS,
                          [loaded[i].summary for i in with_frames])
        for i, e, m in zip(with_frames, ev, sm, strict=True):
            suites[i] = {SUITE_EVENTS: e, SUITE_METRICS: m}
    share = round((time.perf_counter() - t0) / max(1, len(loaded)), 4)
    out = []
    for ld, run_suites in zip(loaded, suites, strict=True):
        out.append(_finish(ld, run_suites, share, len(loaded), write))
    return out


def _finish(ld: _Loaded, suites: dict[str, dict], seconds: float, batch: int,
            write: bool) -> ValidationResult:
    run_dir, manifest, preflight = ld.run_dir, ld.manifest, ld.preflight
    failed = list(preflight)
    for name, res in suites.items():
        failed += _failed_names(name, res)
    success = not failed
    stats = {
        "evaluated": sum(r["statistics"]["evaluated_expectations"] for r in suites.values()),
        "failed": len(failed),
        "seconds": seconds,
        "batch_runs": batch,
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
        # compact JSON: the C encoder (indent= falls back to the pure-Python one, ~10x slower)
        write_text_atomic(json_path, json.dumps(report, default=str))
        write_text_atomic(html_path, render_html(report))
    return ValidationResult(success, failed, html_path if write else None,
                            json_path if write else None, stats)


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
        write_text_atomic(jp, json.dumps(report, indent=1, default=str))
        write_text_atomic(hp, render_html(report))
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
    for msg in _exception_messages(res)[:2]:
        parts.append(f"error: {msg[:300]}")
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
