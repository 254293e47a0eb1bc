"""`slicert run`, `slicert check` and the `slicert stage ...` faces used by Airflow tasks."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slicert_ops import hosttime
from slicert_ops.errors import InputError, SliceRTError
from slicert_ops.manifest import Expansion, Experiment, expand, load_manifest, parse_conf


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="measure every candidate of a manifest",
                       description="Expand MANIFEST into candidates and measure each: TVM "
                       "codegen, firmware build, QEMU run with the cycle plugin. Writes "
                       "OUT/<experiment>/run_NNNN/. Exit 0 all ok, 1 some failed, 2 bad input.")
    p.add_argument("manifest", type=Path)
    _common(p)
    p.add_argument("--track", action="store_true",
                   help="validate (Great Expectations) and log every run to MLflow + S3")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timings", type=Path, default=None, metavar="FILE",
                   help="write the host seconds per stage (set-up, sweep, validation wait, "
                        "index/report, summary) to FILE as JSON")
    p.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a manifest and count its candidates")
    c.add_argument("manifest", type=Path)
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--conf", help="JSON object merged into the experiment (as Airflow's conf)")
    c.add_argument("--verbose", "-v", action="store_true",
                   help="list the candidates and every skipped (impossible) combination")
    c.add_argument("--out", type=Path, default=Path("results"),
                   help="results folder whose index.parquet gives measured per-run costs for "
                        "the time estimate (default: results)")
    c.add_argument("--jobs", "-j", type=int, default=1, help="jobs assumed by the estimate")
    c.set_defaults(func=cmd_check)

    st = sub.add_parser("stage", help="one pipeline stage (what orchestrated tasks run)")
    stsub = st.add_subparsers(dest="stage", required=True, metavar="STAGE")
    sp = stsub.add_parser("plan", help="expand a manifest into batches; print the plan")
    sp.add_argument("manifest", type=Path)
    sp.add_argument("--conf", help="JSON object merged into the experiment")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--out", type=Path, default=Path("results"))
    sp.add_argument("--batch-size", type=int, default=None)
    sp.add_argument("--run-id", default=None,
                    help="orchestrator run id: the plan goes to OUT/<experiment>/plans/"
                         "<run id>.json (concurrent runs never share a plan file)")
    sp.set_defaults(func=cmd_stage_plan)
    sb = stsub.add_parser("batch", help="measure one batch of a plan")
    sb.add_argument("plan", type=Path)
    sb.add_argument("--batch", type=int, required=True)
    sb.add_argument("--jobs", type=int, default=1)
    sb.add_argument("--track", action="store_true")
    sb.set_defaults(func=cmd_stage_batch)
    sa = stsub.add_parser("aggregate", help="index + report (+ close the tracked sweep)")
    sa.add_argument("plan", type=Path)
    sa.add_argument("--track", action="store_true")
    sa.set_defaults(func=cmd_stage_aggregate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results"),
                   help="results folder (default: results)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="parallel worker processes")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a manifest field, e.g. "
                   "experiment.repeat=1 (value parsed as YAML; repeatable)")
    p.add_argument("--conf", help="JSON object merged into the experiment (as Airflow's conf)")


def _load(args: argparse.Namespace) -> Experiment:
    conf = parse_conf(args.conf) if getattr(args, "conf", None) else None
    return load_manifest(args.manifest, args.overrides, conf)


def _jobs(n: int) -> int:
    if n < 1:
        raise InputError(f"--jobs must be >= 1, got {n}", field="--jobs")
    return n


def cmd_check(args: argparse.Namespace) -> int:
    exp = _load(args)
    expansion = expand(exp)
    n = len(expansion.candidates)
    print(f"{exp.source}: ok: experiment {exp.name!r}, {n} candidates x {exp.repeat} "
          f"repeats = {n * exp.repeat} runs")
    if exp.is_network:
        from slicert_ops.network.report import describe_plan

        for line in describe_plan(exp, expansion.candidates):
            print(f"  {line}")
    if exp.searching:
        s = exp.search_spec
        print(f"  search {s.strategy}: at most {s.budget} candidates measured"
              f"{' per task' if exp.is_network else ''}, objective {s.objective!r}")
    for line in skipped_lines(expansion, all_of_them=args.verbose):
        print(line)
    _size_warning(n, exp, args.out, _jobs(args.jobs))
    if args.verbose:
        for c in expansion.candidates:
            what = f"{c.operator['type']} {','.join(c.operator.get('layers', []))} " \
                if exp.is_network else ""
            print(f"  {c.index:4d} {c.id} {what}{json.dumps(c.schedule, sort_keys=True)}")
    return 0


def skipped_lines(expansion: Expansion, all_of_them: bool, hint: str = "--verbose",
                  examples: int = 2) -> list[str]:
    """The impossible combinations left out: every one (``all_of_them``), else a count per
    kind of reason with a few examples."""
    if not expansion.skipped:
        return []
    if all_of_them:
        return [f"  skipped (impossible together): {line}" for line in expansion.skipped]
    groups = expansion.skipped_by_reason()
    lines = [f"  skipped {len(expansion.skipped)} impossible combination(s), by reason"
             f"{f' ({hint} lists them all)' if len(expansion.skipped) > examples else ''}:"]
    for kind, items in groups.items():
        lines.append(f"    {len(items):5d} x {kind}, e.g.")
        lines += [f"            {line}" for line in _distinct(items, examples)]
    return lines


def _distinct(lines: list[str], n: int) -> list[str]:
    """n examples, preferring ones whose reason text differs (not only in another slice)."""
    picked: list[str] = []
    for line in lines:
        if len(picked) < n and all(line.split(": ", 1)[-1] != p.split(": ", 1)[-1]
                                   for p in picked):
            picked.append(line)
    return picked + [x for x in lines if x not in picked][:n - len(picked)]


def _cmd_run(args: argparse.Namespace) -> int:
    from slicert_ops.session import Session

    exp = _load(args)
    jobs = _jobs(args.jobs)
    expansion = expand(exp)
    cands = expansion.candidates
    check_writable(args.out / exp.name)
    if not exp.searching:
        print(f"{exp.name}: {len(cands)} candidates x {exp.repeat} repeats, {jobs} job(s) -> "
              f"{args.out / exp.name}", file=sys.stderr)
    for line in skipped_lines(expansion, all_of_them=False, hint="slicert check --verbose"):
        print(line, file=sys.stderr)
    session = Session.open(exp, args.out, cands, jobs=jobs, progress=not args.no_progress,
                           track=args.track)
    hosttime.add("setup", time.time() - hosttime.STARTED)
    with hosttime.stage("sweep"):  # includes the validation wait (stage "validation")
        measured = session.measure(cands)
    with hosttime.stage("index_report"):
        _, outcome = session.aggregate(measured.exit_code)
    with hosttime.stage("summary"):
        session.print_summary(measured)
        _print_where(outcome)
    if args.timings is not None:
        hosttime.write(args.timings)
    return measured.exit_code


def _cmd_stage_plan(args: argparse.Namespace) -> int:
    from slicert_ops.plan import write_plan

    conf = parse_conf(args.conf) if args.conf else None
    exp = load_manifest(args.manifest, args.overrides, conf)
    path, plan = write_plan(exp, args.out, args.batch_size, conf, run_id=args.run_id)
    print(json.dumps({"experiment": exp.name, "plan": str(path.resolve()),
                      "batches": list(range(len(plan["batches"]))),
                      "candidates": len(plan["candidates"]), "repeat": exp.repeat}))
    return 0


def _cmd_stage_batch(args: argparse.Namespace) -> int:
    from slicert_ops.plan import check_toolchain, plan_exp_dir, read_plan
    from slicert_ops.session import Session

    exp, cands, plan = read_plan(args.plan)
    if not 0 <= args.batch < len(plan["batches"]):
        raise InputError(f"batch {args.batch} does not exist (plan has "
                         f"{len(plan['batches'])})", file=str(args.plan), field="--batch")
    check_toolchain(cands, args.plan)
    chosen = [cands[i] for i in plan["batches"][args.batch]]
    session = Session.open(exp, plan_exp_dir(args.plan).parent, chosen,
                           jobs=_jobs(args.jobs), track=args.track)
    # a network's tuned networks need every task's runs: the aggregate stage measures them
    measured = session.measure(chosen, tuned=False)
    session.finish()  # the runs are logged in the background: wait for them
    session.print_summary(measured)
    return measured.exit_code


def _cmd_stage_aggregate(args: argparse.Namespace) -> int:
    from slicert_ops.plan import check_toolchain, plan_exp_dir, read_plan
    from slicert_ops.report.outcome import outcome_lines
    from slicert_ops.session import Session

    exp, cands, _ = read_plan(args.plan)
    exp_dir = plan_exp_dir(args.plan)
    if exp.is_network:
        check_toolchain(cands, args.plan)
    session = Session.open(exp, exp_dir.parent, [], track=args.track,
                           check_tools=exp.is_network)
    tuned_failed = 0
    if exp.is_network:  # the network with the best schedule per task, measured here
        tuned = session.measure_tuned(cands)
        tuned_failed = tuned.exit_code
        for note in tuned.notes:
            print(f"  note: {note}")
    failed, outcome = session.aggregate(None)
    for line in outcome_lines(outcome):
        print(line)
    print(json.dumps(outcome, default=str))  # the task's XCom (schedule order kept)
    return 1 if failed or tuned_failed else 0


# ------------------------------------------------------------------------------ storage errors
# A full disk or an unwritable --out is one clear line (path + cause + fix), exit status 1,
# never a traceback. Runs published before it stay intact (each run folder is written under
# a temporary name and renamed when complete); the next run removes the partial folders.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.ENOTDIR, errno.EFBIG, errno.EMLINK}
_STORAGE_FIX = {
    errno.ENOSPC: "the file system is full: free space there, or give --out a folder on "
                  "another one",
    errno.EDQUOT: "disk quota exceeded: free space, or give --out another folder",
    errno.EFBIG: "file too large for that file system: give --out another folder",
    errno.EROFS: "read-only file system: give --out a writable folder",
    errno.EACCES: "no permission to write there: give --out a folder you can write",
    errno.EPERM: "not permitted to write there: give --out a folder you can write",
    errno.ENOTDIR: "a part of that path is a file, not a folder: give --out a folder",
    errno.EMLINK: "too many entries in one folder: give --out another folder",
}


def storage_message(exc: OSError, where: Path) -> str:
    path = os.path.abspath(exc.filename) if exc.filename else f"under {where}"
    cause = exc.strerror or os.strerror(exc.errno or 0)
    return (f"cannot write {path}: {cause} ({_STORAGE_FIX.get(exc.errno, 'check the folder')}"
            "); runs published before this are intact, partial run folders are removed by "
            "the next run")


@contextlib.contextmanager
def storage_errors(where: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        raise SliceRTError(storage_message(exc, Path(where).absolute())) from None


def check_writable(folder: Path) -> None:
    """Fail before any work when --out cannot be written (permissions, read-only, a file)."""
    with storage_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".slicert-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()


def _size_warning(n_candidates: int, exp: Experiment, out: Path, jobs: int,
                  always: bool = False) -> None:
    """Estimated time from measured per-run costs; a warning when the sweep is huge."""
    from slicert_ops.report.estimate import WARN_RUNS, estimate, human

    est = estimate(n_candidates, exp.repeat, out, exp.name)
    if not (always or est.too_big()):
        return
    print(f"slicert: warning: {est.runs:,} runs ({n_candidates:,} candidates x "
          f"{exp.repeat:,} repeats), estimated {human(est.seconds(jobs))} with {jobs} job(s) "
          f"({est.per_candidate_s:.2f} s per candidate + {est.per_run_s:.2f} s per run: "
          f"{est.source}). Above {WARN_RUNS:,} runs this is most likely a mistake: lower "
          "experiment.repeat or the parameter lists.", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    with storage_errors(args.out):
        return _cmd_run(args)


def cmd_stage_plan(args: argparse.Namespace) -> int:
    with storage_errors(args.out):
        return _cmd_stage_plan(args)


def cmd_stage_batch(args: argparse.Namespace) -> int:
    with storage_errors(args.plan.parent):
        return _cmd_stage_batch(args)


def cmd_stage_aggregate(args: argparse.Namespace) -> int:
    with storage_errors(args.plan.parent):
        return _cmd_stage_aggregate(args)


def _print_where(outcome: dict[str, Any]) -> None:
    """Paths and MLflow links after `slicert run`'s summary table (counts are in it)."""
    for answer in outcome.get("answers") or ():
        print(f"answer:  {answer}")
    for key, label in (("results", "results"), ("index", "index"), ("report", "report"),
                       ("mlflow_url", "MLflow")):
        if outcome.get(key):
            print(f"{label + ':':9s}{outcome[key]}")

