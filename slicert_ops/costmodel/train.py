"""`slicert train`: traces -> feature table -> XGBoost + LightGBM -> pickle (+ MLflow).

    result = train(TrainConfig(input="results/**/qemu_trace.json",
                               output="artifacts/cost_model.pkl"))

Steps: read the run folders of the matching traces (schema-checked), keep the valid runs
only (the index's ``valid`` column: status ok, correct == 1, and the validation stage's
verdict -- validation.json, written into every run folder -- not failed), one row per
candidate, seeded split by candidate, fit both families on the train part, evaluate on the
held-out part, keep the better (higher ``score``: mean Spearman), write the pickle. With
MLFLOW_TRACKING_URI set: log a run in experiment ``slicert-cost-model`` (params, metrics of
both families, the pyfunc model), then decide promotion:

- the current champion and the new model are scored on the SAME held-out rows: this
  training's held-out candidates, minus any the champion was trained on (read from its
  ``training/metadata.json``; when fewer than ``MIN_COMPARE`` candidates would be left,
  all held-out rows are used and the log says how many the champion had seen);
- promoted when the new score is strictly higher (or there is no champion, or the champion
  cannot be evaluated): only then is a registry version created and given the
  ``champion`` alias. A model that is not promoted is NOT registered: its MLflow run is
  tagged ``slicert.decision = kept-champion`` (a candidate) and keeps the model;
- the decision, both scores and the number of compared candidates are logged (train log,
  run metrics ``promotion/*``, run and version tags).

The registered/pickled model is the one fitted on the train part only, so that the
held-out score it is promoted on is honest.
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from slicert_ops.costmodel import evaluate as ev
from slicert_ops.costmodel import registry
from slicert_ops.costmodel.features import TARGETS, FeatureTable, load_table
from slicert_ops.costmodel.models import FAMILIES, TreeCostModel, make_model
from slicert_ops.errors import InputError, InsufficientDataError, ServiceError

MIN_RUNS = 20
MIN_CANDIDATES = 6
MIN_COMPARE = 3  # held-out candidates unseen by the champion needed for a leak-free comparison


@dataclass
class TrainConfig:
    input: str = "results/**/qemu_trace.json"
    output: str | Path = "artifacts/cost_model.pkl"
    min_runs: int = MIN_RUNS
    seed: int = 0
    register: bool = True
    test_fraction: float = 0.25
    families: tuple[str, ...] = ("xgboost", "lightgbm")
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> overrides
    model_name: str = registry.MODEL_NAME


@dataclass
class TrainResult:
    model: TreeCostModel
    family: str
    score: float
    metrics: dict[str, dict[str, float]]          # family -> evaluate() output
    n_runs: int
    n_valid_runs: int
    n_candidates: int
    n_train: int
    n_test: int
    output: Path
    timings_s: dict[str, float]
    mlflow_run_id: str | None = None
    model_version: str | None = None
    promoted: bool | None = None
    decision: str | None = None
    champion_version: str | None = None
    champion_score: float | None = None
    compared_score: float | None = None   # the new model on the compared rows
    compared_candidates: int | None = None
    reason: str | None = None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("xgboost-cpu", "xgboost", "lightgbm", "numpy", "pandas", "mlflow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_enough(table: FeatureTable, min_runs: int) -> None:
    n_cand = len(table)
    if table.n_valid_runs >= min_runs and n_cand >= MIN_CANDIDATES:
        return
    excluded = ", ".join(f"{n} {why}" for why, n in sorted(table.excluded.items()))
    detail = f" (excluded: {excluded})" if excluded else ""
    raise InsufficientDataError(
        f"too few valid runs to train a cost model: need at least {min_runs} valid runs over "
        f"at least {MIN_CANDIDATES} distinct candidates, found {table.n_valid_runs} valid "
        f"run(s) of {table.n_runs} over {n_cand} candidate(s){detail}",
        field="--input", fix="run more candidates, or lower --min-runs")


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def summary_line(family: str, m: dict[str, float]) -> str:
    k, p = "kernel_cycles", "max_preemption_latency_cycles"
    return (f"{family:9s} score {_fmt(m['score'])} | kernel_cycles: spearman "
            f"{_fmt(m[f'{k}/spearman'])} top5_recall {_fmt(m[f'{k}/top5_recall'])} "
            f"mape {_fmt(m[f'{k}/mape'], True)} | preemption: spearman "
            f"{_fmt(m[f'{p}/spearman'])} mape {_fmt(m[f'{p}/mape'], True)}")


def train(config: TrainConfig, echo: Callable[[str], None] = print) -> TrainResult:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    table = load_table(config.input)
    check_enough(table, config.min_runs)
    timings["load"] = time.perf_counter() - t0
    echo(f"data: {table.n_valid_runs} valid runs of {table.n_runs} -> {len(table)} candidates, "
         f"{len(table.feature_columns)} features, experiments: {', '.join(table.experiments)}")
    if table.excluded:  # invalid runs never reach the model (the index's `valid` column)
        echo("skipped (not valid): " + ", ".join(f"{n} {why}" for why, n
                                                 in sorted(table.excluded.items())))

    train_mask, test_mask = ev.split_candidates(table.candidate_ids, config.seed,
                                                config.test_fraction)
    X_train, y_train = table.X[train_mask], table.y[train_mask]
    X_test, y_test = table.X[test_mask], table.y[test_mask]
    tasks_test = table.tasks[test_mask]

    models: dict[str, TreeCostModel] = {}
    metrics: dict[str, dict[str, float]] = {}
    for family in config.families:
        if family not in FAMILIES:
            raise InputError(f"unknown model family {family!r}", fix=f"use {list(FAMILIES)}")
        t = time.perf_counter()
        model = make_model(family, config.params.get(family), seed=config.seed)
        model.fit(X_train, y_train)
        timings[f"fit_{family}"] = time.perf_counter() - t
        metrics[family] = ev.evaluate(model.predict(X_test), y_test, tasks_test)
        models[family] = model
        echo(summary_line(family, metrics[family]))

    def rank(f: str) -> float:
        s = metrics[f]["score"]
        return -math.inf if math.isnan(s) else s

    best = max(config.families, key=rank)  # ties: the first family listed
    model = models[best]
    score = metrics[best]["score"]
    model.metadata = {
        "family": best, "score": score, "metrics": metrics, "seed": config.seed,
        "test_fraction": config.test_fraction, "input": config.input,
        "n_runs": table.n_runs, "n_valid_runs": table.n_valid_runs,
        "n_candidates": len(table), "n_train": int(train_mask.sum()),
        "n_test": int(test_mask.sum()), "experiments": table.experiments,
        "targets": TARGETS, "params": model.params, "versions": _versions(),
        "test_candidate_ids": sorted(set(table.candidate_ids[test_mask])),
        "train_candidate_ids": sorted(set(table.candidate_ids[train_mask])),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    output = model.save(config.output)
    echo(f"selected {best} (score {_fmt(score)}); wrote {output}")

    result = TrainResult(model=model, family=best, score=score, metrics=metrics,
                         n_runs=table.n_runs, n_valid_runs=table.n_valid_runs,
                         n_candidates=len(table), n_train=int(train_mask.sum()),
                         n_test=int(test_mask.sum()), output=output, timings_s=timings)
    if registry.tracking_uri() is None:
        echo("MLFLOW_TRACKING_URI is not set: model kept local only (no MLflow run, "
             "no registration)")
    else:
        t = time.perf_counter()
        try:
            _track(config, table, result, X_test, y_test, tasks_test, echo)
        except ServiceError as exc:
            raise ServiceError(f"{exc}; the model itself was saved to {output}") from exc
        timings["mlflow"] = time.perf_counter() - t
        # the pickle names the MLflow run / registered version it corresponds to
        model.metadata["mlflow"] = {
            "tracking_uri": registry.tracking_uri(), "run_id": result.mlflow_run_id,
            "model_name": config.model_name if result.model_version else None,
            "model_version": result.model_version, "decision": result.decision,
            "champion_version": result.champion_version,
            "champion_score": result.champion_score}
        model.save(output)
    timings["total"] = time.perf_counter() - t0
    return result


def _track(config: TrainConfig, table: FeatureTable, result: TrainResult,
           X_test: pd.DataFrame, y_test: pd.DataFrame, tasks_test: pd.Series,
           echo: Callable[[str], None]) -> None:
    mlclient = registry.client()  # raises ServiceError when the server is down
    mlflow = registry.import_mlflow()
    exp = mlflow.set_experiment(registry.EXPERIMENT)
    from slicert_ops.tracking.links import ML_EXPERIMENT_TAGS

    for key, value in ML_EXPERIMENT_TAGS.items():  # the MLflow UI opens its ML view here
        if (exp.tags or {}).get(key) is None:
            mlclient.set_experiment_tag(exp.experiment_id, key, value)
    model = result.model
    with mlflow.start_run(run_name=f"train-{result.family}") as run:
        result.mlflow_run_id = run.info.run_id
        mlflow.set_tags({"slicert.kind": "cost-model-training", "slicert.family": result.family,
                         "slicert.input": config.input,
                         "slicert.experiments": ",".join(table.experiments)[:4000]})
        params: dict[str, Any] = {
            "seed": config.seed, "test_fraction": config.test_fraction,
            "min_runs": config.min_runs, "selected_family": result.family,
            "n_runs": result.n_runs, "n_valid_runs": result.n_valid_runs,
            "n_candidates": result.n_candidates, "n_train": result.n_train,
            "n_test": result.n_test, "n_features": len(model.feature_columns),
            "targets": ",".join(TARGETS), "log_target": True,
        }
        for family in config.families:
            fam_params = make_model(family, config.params.get(family)).params
            params.update({f"{family}.{k}": v for k, v in fam_params.items()})
        mlflow.log_params(params)
        flat = {f"{fam}/{k}": v for fam, m in result.metrics.items() for k, v in m.items()}
        flat.update({f"selected/{k}": v for k, v in result.metrics[result.family].items()})
        mlflow.log_metrics({k: v for k, v in flat.items() if not math.isnan(v)})

        with tempfile.TemporaryDirectory(prefix="slicert-costmodel-") as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "metadata.json").write_text(
                json.dumps(model.metadata, indent=1, default=str) + "\n")
            (tmp_path / "feature_importance.json").write_text(
                json.dumps(model.feature_importance(), indent=1) + "\n")
            pred = model.predict(X_test)
            held = pd.concat([table.candidate_ids[X_test.index].rename("candidate_id"),
                              y_test.add_prefix("true_"), pred.add_prefix("pred_")], axis=1)
            held.to_csv(tmp_path / "heldout_predictions.csv", index=False)
            for f in ("metadata.json", "feature_importance.json", "heldout_predictions.csv"):
                mlflow.log_artifact(str(tmp_path / f), artifact_path="training")
            mlflow.log_artifact(str(result.output), artifact_path="training")

            info = registry.log_pyfunc(model, X_test, tmp_path / "cost_model", None)
        if not config.register:
            echo(f"logged MLflow run {run.info.run_id} (--no-register: not registered)")
            return
        _promote(config, mlclient, mlflow, run.info.run_id, info, result, table,
                 X_test, y_test, tasks_test, echo)


def _champion_train_ids(mlflow: Any, run_id: str | None) -> set[str] | None:
    """The candidates the champion was trained on (its training/metadata.json), if known."""
    if not run_id:
        return None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path="training/metadata.json")
        ids = json.loads(Path(path).read_text()).get("train_candidate_ids")
    except Exception:  # noqa: BLE001 - older champions have no list: compare on all rows
        return None
    return set(ids) if isinstance(ids, list) else None


def _promote(config: TrainConfig, mlclient: Any, mlflow: Any, run_id: str, info: Any,
             result: TrainResult, table: FeatureTable, X_test: pd.DataFrame,
             y_test: pd.DataFrame, tasks_test: pd.Series,
             echo: Callable[[str], None]) -> None:
    name = config.model_name
    model = result.model
    champion = registry.champion_version(mlclient, name)
    test_ids = table.candidate_ids[X_test.index]
    rows = pd.Series(True, index=X_test.index)
    scope = f"all {test_ids.nunique()} held-out candidates"
    champion_score: float | None = None
    new_score = result.score
    note = ""
    if champion is not None:
        seen = _champion_train_ids(mlflow, champion.run_id)
        if seen is not None:
            unseen = ~test_ids.isin(seen)
            n_unseen = test_ids[unseen].nunique()
            if n_unseen >= MIN_COMPARE:
                rows = unseen
                scope = (f"the same {n_unseen} held-out candidates, unseen in training by "
                         "both models")
            elif n_unseen < test_ids.nunique():
                scope += (f" (the champion was trained on {test_ids.nunique() - n_unseen} of "
                          f"them: fewer than {MIN_COMPARE} unseen ones are left)")
        Xc, yc, tc = X_test[rows], y_test[rows], tasks_test[rows]
        new_score = ev.evaluate(model.predict(Xc), yc, tc)["score"]
        try:
            champ_model = registry.load_version_pyfunc(name, champion.version)
            known = champ_model.metadata.get_input_schema()
            known = set(known.input_names()) if known else set(Xc.columns)
            champ_in = Xc[[c for c in Xc.columns if c in known]]
            champ_pred = pd.DataFrame(champ_model.predict(champ_in), index=Xc.index)
            champ_metrics = ev.evaluate(champ_pred, yc, tc)
            champion_score = champ_metrics["score"]
            mlflow.log_metrics({f"champion/{k}": v for k, v in champ_metrics.items()
                                if not math.isnan(v)})
        except Exception as exc:  # noqa: BLE001 - a champion we cannot run is replaced
            champion_score = math.nan
            note = f"; the champion could not be evaluated ({type(exc).__name__}: {exc})"
    n_compared = int(test_ids[rows].nunique())
    if champion is None:
        promote, decision = True, "first-champion"
        reason = "there is no champion yet"
    elif ev.beats(new_score, champion_score):
        promote, decision = True, "promoted"
        reason = (f"new score {_fmt(new_score)} > champion v{champion.version} score "
                  f"{_fmt(champion_score)} on {scope}{note}")
    else:
        promote, decision = False, "kept-champion"
        reason = (f"new score {_fmt(new_score)} <= champion v{champion.version} score "
                  f"{_fmt(champion_score)} on {scope}")
    result.promoted, result.decision, result.reason = promote, decision, reason
    result.champion_version = champion.version if champion is not None else None
    result.champion_score = champion_score
    result.compared_score = new_score
    result.compared_candidates = n_compared
    tags = {"family": result.family, "score": result.score, "decision": decision,
            "compared_score": new_score, "compared_candidates": n_compared,
            "champion_version": result.champion_version, "champion_score": champion_score,
            "run_id": run_id, "reason": reason}
    if promote:
        mv = mlflow.register_model(info.model_uri, name, tags={"slicert.source_run": run_id})
        version = str(mv.version)
        result.model_version = version
        mlclient.set_registered_model_alias(name, registry.ALIAS, version)
        registry.set_decision_tags(mlclient, name, version, tags)
        mlflow.set_tag("slicert.model_version", version)
    mlflow.set_tags({f"{registry.TAG}{k}": ("none" if v is None else
                                            f"{v:.6f}" if isinstance(v, float) else str(v))
                     for k, v in tags.items() if k != "run_id"})
    mlflow.set_tag("slicert.candidate", "false" if promote else "true")
    mlflow.log_metrics({"promotion/promoted": float(promote),
                        "promotion/new_score": new_score,
                        "promotion/compared_candidates": float(n_compared),
                        **({"promotion/champion_score": champion_score}
                           if champion_score is not None
                           and not math.isnan(champion_score) else {})})
    if promote:
        verdict = f"registered as v{result.model_version}, now '{registry.ALIAS}'"
    else:
        verdict = (f"not registered ('{registry.ALIAS}' stays v{result.champion_version}; the "
                   f"candidate model stays in MLflow run {run_id})")
    echo(f"promotion: {decision}: {reason} -> {verdict}")
    from slicert_ops.tracking.links import experiment_url, model_url, ui_url

    ui = ui_url()
    link = (model_url(ui, name, result.model_version) if promote
            else experiment_url(ui, mlflow.get_run(run_id).info.experiment_id, run_id))
    if link:
        echo(f"MLflow: {link}")
