"""CLI: `slicert train`, `slicert model list|show|promote`, `slicert report`, `slicert index`.

    slicert train --input 'results/**/qemu_trace.json' --output artifacts/cost_model.pkl
    slicert model list
    slicert model show 3
    slicert model promote 3
    slicert index results/
    slicert report results/ [--experiment conv2d_5x5_latency] [--out reports/]
    slicert gc results/ --keep 1
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from slicert_ops.errors import InputError, InsufficientDataError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the XGBoost/LightGBM cost model from traces",
        description="Build the feature table from run folders (the traces' siblings), train "
                    "XGBoost and LightGBM, keep the better, write --output; with "
                    "MLFLOW_TRACKING_URI set also log, register and (when better) promote it.")
    p.add_argument("--input", default="results/**/qemu_trace.json", metavar="GLOB",
                   help="trace files, quoted glob (default: %(default)s)")
    p.add_argument("--output", default="artifacts/cost_model.pkl", metavar="PATH",
                   help="pickle with model, feature columns and metadata (default: %(default)s)")
    p.add_argument("--min-runs", type=int, default=20, metavar="N",
                   help="refuse with fewer valid runs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="held-out split seed (default: 0)")
    p.add_argument("--test-fraction", type=float, default=0.25, metavar="F",
                   help="share of candidates held out (default: %(default)s)")
    p.add_argument("--skip-if-insufficient", action="store_true",
                   help="exit 0 with a note (instead of 2) when there are too few valid runs "
                        "(scheduled pipelines that run after small sweeps)")
    p.add_argument("--no-register", action="store_true",
                   help="log to MLflow but do not register or promote")
    p.add_argument("--model-name", default=None, help="registered model name "
                   "(default: slicert-cost-model)")
    p.set_defaults(func=cmd_train)

    m = subparsers.add_parser("model", help="registered cost model versions (MLflow)",
                              description="List, inspect and promote versions of the "
                                          "registered cost model (needs MLFLOW_TRACKING_URI).")
    msub = m.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="all versions, champion marked")
    ml.add_argument("--model-name", default=None)
    ml.set_defaults(func=cmd_model_list)
    ms = msub.add_parser("show", help="one version: tags, metrics, source run")
    ms.add_argument("version")
    ms.add_argument("--model-name", default=None)
    ms.set_defaults(func=cmd_model_show)
    mp = msub.add_parser("promote", help="force the champion alias onto VERSION")
    mp.add_argument("version")
    mp.add_argument("--model-name", default=None)
    mp.set_defaults(func=cmd_model_promote)

    r = subparsers.add_parser("report", help="plots + summary per sweep",
                              description="Write PNG plots, summary.md/.html and "
                                          "candidates.csv for each experiment under RESULTS_DIR.")
    r.add_argument("results_dir", metavar="RESULTS_DIR")
    r.add_argument("--experiment", default=None, metavar="NAME",
                   help="only this experiment (default: every experiment found)")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: RESULTS_DIR/reports); one sub-folder per "
                        "experiment")
    r.set_defaults(func=cmd_report)

    i = subparsers.add_parser("index", help="write the Parquet result index",
                              description="One row per run folder: ids, status, parameters, "
                                          "metrics, features.")
    i.add_argument("results_dir", metavar="RESULTS_DIR")
    i.add_argument("--out", default=None, metavar="PATH",
                   help="default: RESULTS_DIR/index.parquet")
    i.set_defaults(func=cmd_index)

    g = subparsers.add_parser(
        "gc", help="prune superseded runs (.superseded/) and old plan files",
        description="A re-run with another conf moves earlier run folders to "
                    "<experiment>/.superseded/. Keep the newest K superseded versions per run "
                    "number, delete the older ones (and plan files older than a week). "
                    "Published runs are never touched. Every sweep applies the same policy "
                    "with K = $SLICERT_KEEP_SUPERSEDED (default 2; 'all' turns it off).")
    g.add_argument("results_dir", metavar="RESULTS_DIR", nargs="?", default="results")
    g.add_argument("--keep", type=int, default=0, metavar="K",
                   help="superseded versions kept per run (default: %(default)s)")
    g.add_argument("--experiment", default=None, metavar="NAME", help="only this experiment")
    g.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    g.set_defaults(func=cmd_gc)


def _name(args) -> str:
    from slicert_ops.costmodel import registry

    return args.model_name or registry.MODEL_NAME


def cmd_train(args) -> int:
    from slicert_ops.costmodel.train import TrainConfig, train

    if args.min_runs < 1:
        raise InputError("must be at least 1", field="--min-runs")
    if not 0.05 <= args.test_fraction <= 0.5:
        raise InputError("must be between 0.05 and 0.5", field="--test-fraction")
    config = TrainConfig(input=args.input, output=args.output, min_runs=args.min_runs,
                         seed=args.seed, register=not args.no_register,
                         test_fraction=args.test_fraction, model_name=_name(args))
    try:
        result = train(config)
    except InsufficientDataError as exc:
        if not args.skip_if_insufficient:
            raise
        print(f"train: skipped: {exc}")
        return 0
    t = result.timings_s
    print(f"done in {t['total']:.1f} s (fit: "
          + ", ".join(f"{k[4:]} {v:.1f} s" for k, v in t.items() if k.startswith("fit_"))
          + (f", mlflow {t['mlflow']:.1f} s" if "mlflow" in t else "") + ")")
    return 0


def _fmt_ts(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else ""


def cmd_model_list(args) -> int:
    from slicert_ops.costmodel import registry

    client = registry.client()
    name = _name(args)
    versions = registry.list_versions(client, name)
    if not versions:
        print(f"no versions of {name} yet (train one with `slicert train`)")
        return 0
    champion = registry.champion_version(client, name)
    print(f"{'version':>7}  {'alias':8}  {'created':16}  {'family':8}  {'score':>6}  "
          f"{'decision':21}  run")
    for v in versions:
        tags = v.tags or {}
        alias = registry.ALIAS if champion and v.version == champion.version else ""
        decision = tags.get("slicert.decision", "")
        if "slicert.forced_promotion" in tags:
            decision += " +forced"
        print(f"{v.version:>7}  {alias:8}  {_fmt_ts(v.creation_timestamp):16}  "
              f"{tags.get('slicert.family', ''):8}  {tags.get('slicert.score', '')[:6]:>6}  "
              f"{decision:21}  {v.run_id or ''}")
    _candidates_note(client)
    return 0


def _candidates_note(client) -> None:
    """Models that lost to the champion are not registered: say where they are."""
    from slicert_ops.costmodel import registry
    from slicert_ops.tracking.links import experiment_url, ui_url

    try:
        exp = client.get_experiment_by_name(registry.EXPERIMENT)
        if exp is None:
            return
        runs = client.search_runs([exp.experiment_id],
                                  "tags.`slicert.candidate` = 'true'", max_results=1000)
    except Exception:  # noqa: BLE001 - a note, not the listing
        return
    if runs:
        link = experiment_url(ui_url(), exp.experiment_id) or f"experiment {exp.name!r}"
        print(f"{len(runs)} trained model(s) did not beat the champion and are not registered "
              f"(candidates, tag slicert.candidate=true): {link}")


def cmd_model_show(args) -> int:
    from slicert_ops.costmodel import registry

    client = registry.client()
    name = _name(args)
    v = registry.get_version(client, name, args.version)
    print(f"{name} version {v.version}")
    print(f"  aliases:  {', '.join(v.aliases) or '-'}")
    print(f"  created:  {_fmt_ts(v.creation_timestamp)}")
    print(f"  status:   {v.status}")
    print(f"  run:      {v.run_id}")
    print(f"  source:   {v.source}")
    for key, value in sorted((v.tags or {}).items()):
        print(f"  tag {key} = {value}")
    if v.run_id:
        run = client.get_run(v.run_id)
        selected = {k[len("selected/"):]: val for k, val in run.data.metrics.items()
                    if k.startswith("selected/")}
        if selected:
            print("  held-out metrics (selected family):")
            for key, val in sorted(selected.items()):
                print(f"    {key:45s} {val:.4f}")
        params = run.data.params
        keys = ("selected_family", "n_valid_runs", "n_candidates", "n_train", "n_test",
                "n_features", "seed")
        print("  data: " + json.dumps({k: params[k] for k in keys if k in params}))
    return 0


def cmd_model_promote(args) -> int:
    from slicert_ops.costmodel import registry

    client = registry.client()
    name = _name(args)
    previous = registry.promote(client, name, args.version)
    was = f"was v{previous}" if previous else "there was no champion"
    print(f"promoted: {name} v{args.version} is now '{registry.ALIAS}' ({was}; forced by "
          f"`slicert model promote`, no score comparison)")
    return 0


def _experiments(df) -> list[str]:
    return sorted(str(e) for e in df["experiment"].dropna().unique())


def cmd_report(args) -> int:
    from slicert_ops.report.index import build_index
    from slicert_ops.report.report import write_report

    results = Path(args.results_dir)
    df = build_index(results)
    if df.empty:
        raise InputError("no run folders (run_*/manifest.json) found", file=str(results),
                         fix="give the folder the pipeline wrote results into")
    experiments = _experiments(df)
    if args.experiment:
        if args.experiment not in experiments:
            raise InputError(f"experiment {args.experiment!r} not found "
                             f"(found: {', '.join(experiments)})", field="--experiment")
        experiments = [args.experiment]
    out_root = Path(args.out) if args.out else results / "reports"
    for exp in experiments:
        paths = write_report(df, out_root / exp, exp)
        n = int((df["experiment"] == exp).sum())
        summary = next((p for p in paths if p.suffix == ".html"), None)
        print(f"{exp}: {n} runs -> {len(paths)} files in {out_root / exp} (open {summary})")
    return 0


def cmd_index(args) -> int:
    import pandas as pd

    from slicert_ops.report.index import write_index

    path = write_index(args.results_dir, args.out)
    df = pd.read_parquet(path)
    n_valid = int(df["valid"].sum()) if "valid" in df else 0
    exps = _experiments(df) if len(df) else []
    print(f"wrote {path}: {len(df)} runs ({n_valid} valid), {len(df.columns)} columns, "
          f"experiments: {', '.join(exps) or '-'}")
    return 0


def cmd_gc(args) -> int:
    from slicert_ops.report.retention import gc

    result = gc(args.results_dir, args.keep, experiment=args.experiment, dry_run=args.dry_run)
    if args.dry_run:
        for p in result.removed:
            print(f"  {p}")
    print(f"gc {args.results_dir} (keep {args.keep}): {result.line(args.dry_run)}")
    return 0
