"""`slicert train`: traces -> feature table -> XGBoost + LightGBM -> pickle (+ MLflow).

    result = train(TrainConfig(input="results/**/qemu_trace.json",
                               output="artifacts/cost_model.pkl"))

Steps: read the run folders of the matching traces (schema-checked), keep valid runs
(status ok, correct == 1, validation passed when validation.json exists), one row per
candidate, seeded split by candidate, fit both families on the train part, evaluate on the
held-out part, keep the better (higher ``score``: mean Spearman), write the pickle. With
MLFLOW_TRACKING_URI set: log a run in experiment ``slicert-cost-model`` (params, metrics of
both families, the pyfunc model), register it as a new version of ``slicert-cost-model``,
evaluate the current champion on the same held-out rows and move the ``champion`` alias
only when the new version scores strictly higher (or there is no champion).

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
        "test_candidate_ids": list(table.candidate_ids[test_mask]),
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
    mlflow.set_experiment(registry.EXPERIMENT)
    model = result.model
    name = config.model_name
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

            champion = None
            champion_score = None
            champion_note = ""
            if config.register:
                # Evaluate the current champion on the new held-out rows before registering.
                champion = registry.champion_version(mlclient, name)
                if champion is not None:
                    try:
                        champ_model = registry.load_version_pyfunc(name, champion.version)
                        known = champ_model.metadata.get_input_schema()
                        known = set(known.input_names()) if known else set(X_test.columns)
                        champ_in = X_test[[c for c in X_test.columns if c in known]]
                        champ_pred = pd.DataFrame(champ_model.predict(champ_in),
                                                  index=X_test.index)
                        champ_metrics = ev.evaluate(champ_pred, y_test, tasks_test)
                        champion_score = champ_metrics["score"]
                        mlflow.log_metrics({f"champion/{k}": v for k, v in
                                            champ_metrics.items() if not math.isnan(v)})
                    except Exception as exc:  # a champion we cannot run is replaced
                        champion_score = math.nan
                        champion_note = f" (champion v{champion.version} failed: {exc})"
                        echo(f"could not evaluate champion v{champion.version}: {exc}")
            info = registry.log_pyfunc(model, X_test, tmp_path / "cost_model",
                                       name if config.register else None)
        if not config.register:
            echo(f"logged MLflow run {run.info.run_id} (--no-register: not registered)")
            return
        version = str(info.registered_model_version)
        result.model_version = version
        if champion is None:
            promote, decision = True, "first-champion"
        elif ev.beats(result.score, champion_score):
            promote, decision = True, "promoted"
        else:
            promote, decision = False, "kept-champion"
        result.promoted, result.decision = promote, decision
        result.champion_version = champion.version if champion is not None else None
        result.champion_score = champion_score
        if promote:
            mlclient.set_registered_model_alias(name, registry.ALIAS, version)
        registry.set_decision_tags(mlclient, name, version, {
            "family": result.family, "score": result.score, "decision": decision,
            "champion_version": result.champion_version, "champion_score": champion_score,
            "run_id": run.info.run_id,
        })
        mlflow.log_metrics({"promotion/promoted": float(promote),
                            "promotion/new_score": result.score,
                            **({"promotion/champion_score": champion_score}
                               if champion_score is not None
                               and not math.isnan(champion_score) else {})})
        mlflow.set_tag("slicert.decision", decision)
        mlflow.set_tag("slicert.model_version", version)
        champ_txt = (f"champion v{result.champion_version} score {_fmt(champion_score)}"
                     f"{champion_note}" if champion is not None else "no champion yet")
        verdict = (f"v{version} is now {registry.ALIAS}" if promote
                   else f"{registry.ALIAS} stays v{result.champion_version}")
        echo(f"promotion: {decision}: new v{version} score {_fmt(result.score)} vs "
             f"{champ_txt} -> {verdict}")
