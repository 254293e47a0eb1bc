"""Cost model: feature table, refusals, training quality, MLflow registry and promotion.

Data: synthetic run folders (tests/support/synthetic_runs.py). Registry tests run against a
real MLflow server started by a fixture (marked ``services``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.mlflow_server import mlflow_server
from support.synthetic_runs import DENSE, write_sweep

from slicert_ops import commands_model
from slicert_ops.costmodel import evaluate as ev
from slicert_ops.costmodel.base import CostModel
from slicert_ops.costmodel.features import (
    TARGETS,
    build_table,
    candidate_features,
    feature_frame,
    load_table,
)
from slicert_ops.costmodel.train import TrainConfig, train
from slicert_ops.errors import InputError
from slicert_ops.report.index import build_index

MODEL = "slicert-cost-model"
WORSE = {"xgboost": {"n_estimators": 2, "max_depth": 1},
         "lightgbm": {"n_estimators": 2, "num_leaves": 2}}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slicert")
    commands_model.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """96 conv2d candidates x 3 repeats (with failed / wrong / unvalidated runs) + a dense sweep."""
    root = tmp_path_factory.mktemp("costmodel") / "results"
    write_sweep(root, "conv2d_5x5_latency", repeat=3,
                failed=lambda c, r: c == 3 and r == 0,
                incorrect=lambda c, r: c == 5,
                validation=lambda c, r: False if c == 7 else True)
    write_sweep(root, "dense_small", operator=DENSE, tile_sizes=(8, 16, 32),
                micro_tiles=(1, 2, 4), unrolls=(1, 2, 4), slices=(32,), repeat=2)
    return root


@pytest.fixture
def no_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def glob_of(root: Path) -> str:
    return str(root / "**" / "qemu_trace.json")


# -- feature table ---------------------------------------------------------------------------

def test_feature_table_keeps_only_valid_runs(results):
    table = load_table(glob_of(results))
    # failed run has no trace: not read; 3 runs with wrong output + 3 with failed validation
    assert table.n_runs == 96 * 3 - 1 + 27 * 2
    assert table.n_valid_runs == table.n_runs - 6
    assert table.excluded == {"output incorrect": 3, "validation failed": 3}
    assert len(table) == 96 - 2 + 27  # candidates 5 and 7 have no valid run left
    cols = table.feature_columns
    assert {"schedule.tile_size", "schedule.micro_tile", "schedule.unroll", "schedule.slice",
            "f_macs", "operator.type=conv2d", "operator.type=dense",
            "runner.irq_period_us"} <= set(cols)
    assert not any(c in cols for c in ("repeat", "seed", "kernel_cycles", "runner.timeout_s"))
    assert list(table.y.columns) == TARGETS


def test_targets_are_mean_cycles_and_worst_latency(results):
    index = build_index(results)
    table = build_table(index)
    valid = index[index["valid"]]
    cid = table.candidate_ids.iloc[0]
    runs = valid[valid["candidate_id"] == cid]
    row = table.y.iloc[0]
    assert row["kernel_cycles"] == pytest.approx(runs["kernel_cycles"].mean())
    assert row["max_preemption_latency_cycles"] == runs["max_preemption_latency_cycles"].max()


def test_candidate_features_match_the_training_rows(results):
    """A worker computing features from a manifest + tvm_config gets the training row."""
    table = load_table(glob_of(results))
    run = next((results / "conv2d_5x5_latency").glob("run_0001"))
    manifest = json.loads((run / "manifest.json").read_text())
    tvm = json.loads((run / "tvm_config.json").read_text())
    row = feature_frame([candidate_features(manifest, tvm)], table.feature_columns)
    i = list(table.candidate_ids).index(manifest["candidate_id"])
    pd.testing.assert_series_equal(row.iloc[0], table.X.iloc[i], check_names=False)


# -- refusals -------------------------------------------------------------------------------

def test_refuses_too_few_valid_runs(tmp_path, no_mlflow):
    root = tmp_path / "results"
    write_sweep(root, "tiny", limit=4, repeat=2, incorrect=lambda c, r: c == 0)
    with pytest.raises(InputError) as err:
        train(TrainConfig(input=glob_of(root), output=tmp_path / "m.pkl"), echo=lambda s: None)
    msg = str(err.value)
    assert "need at least 20 valid runs" in msg
    assert "found 6 valid run(s) of 8 over 3 candidate(s)" in msg
    assert "2 output incorrect" in msg
    assert not (tmp_path / "m.pkl").exists()


def test_refuses_nothing_matching(tmp_path, no_mlflow):
    with pytest.raises(InputError, match="no trace file matches"):
        train(TrainConfig(input=str(tmp_path / "**" / "qemu_trace.json"),
                          output=tmp_path / "m.pkl"), echo=lambda s: None)


def test_refuses_other_trace_schema(tmp_path, no_mlflow):
    root = tmp_path / "results"
    write_sweep(root, "current", limit=12, repeat=2)
    write_sweep(root, "future", limit=3, repeat=2, trace_schema="slicert-trace/2")
    with pytest.raises(InputError) as err:
        train(TrainConfig(input=glob_of(root), output=tmp_path / "m.pkl", min_runs=4),
              echo=lambda s: None)
    msg = str(err.value)
    assert "6 qemu_trace.json file(s) carry schema slicert-trace/2" in msg
    assert "reads only slicert-trace/1" in msg
    assert "future/run_0001/qemu_trace.json" in msg


def test_cli_refusal_exit_code(tmp_path, no_mlflow, capsys):
    from slicert_ops.cli import main

    root = tmp_path / "results"
    write_sweep(root, "tiny", limit=2, repeat=1)
    rc = main(["train", "--input", glob_of(root), "--output", str(tmp_path / "m.pkl")])
    assert rc == 2
    assert "too few valid runs" in capsys.readouterr().err


# -- split and metrics ----------------------------------------------------------------------

def test_split_is_deterministic_and_grouped_by_candidate():
    ids = pd.Series([f"c{i // 3}" for i in range(60)])  # 20 candidates x 3 rows
    a_train, a_test = ev.split_candidates(ids, seed=7)
    b_train, b_test = ev.split_candidates(ids, seed=7)
    c_train, c_test = ev.split_candidates(ids, seed=8)
    assert (a_test == b_test).all() and (a_train == ~a_test).all()
    assert not (a_test == c_test).all()
    assert not set(ids[a_train]) & set(ids[a_test])  # no candidate on both sides
    assert len(set(ids[a_test])) == 5


def test_metrics():
    true = np.array([10.0, 20, 30, 40, 50, 60, 70])
    tasks = np.array(["t"] * 7)
    perfect = ev.target_metrics(true * 1.1, true, tasks)
    assert perfect["spearman"] == pytest.approx(1.0)
    assert perfect["top5_recall"] == 1.0 and perfect["top5_overlap"] == 1.0
    assert perfect["mape"] == pytest.approx(0.1)
    reverse = ev.target_metrics(true[::-1].copy(), true, tasks)
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["top5_recall"] == 0.0
    flat = ev.target_metrics(np.full(7, 5.0), true, tasks)
    assert flat["spearman"] == 0.0  # a constant prediction ranks nothing
    assert math.isnan(ev.target_metrics(true, np.zeros(7), tasks)["spearman"])
    assert ev.beats(0.9, None) and ev.beats(0.9, math.nan) and ev.beats(0.9, 0.8)
    assert not ev.beats(0.8, 0.8) and not ev.beats(0.7, 0.8)


# -- training (local only) ------------------------------------------------------------------

def test_train_local_quality_and_pickle(results, tmp_path, no_mlflow, capsys):
    # (its speed is a benchmark's business, not a timed test's)
    out = tmp_path / "artifacts" / "cost_model.pkl"
    result = train(TrainConfig(input=glob_of(results), output=out, seed=0))
    printed = capsys.readouterr().out
    assert "MLFLOW_TRACKING_URI is not set: model kept local only" in printed
    for family in ("xgboost", "lightgbm"):
        m = result.metrics[family]
        assert m["kernel_cycles/spearman"] > 0.9, (family, m)
        assert m["max_preemption_latency_cycles/spearman"] > 0.9, (family, m)
        assert m["kernel_cycles/mape"] < 0.05
    assert result.score == max(m["score"] for m in result.metrics.values())
    assert result.model_version is None and result.mlflow_run_id is None

    bundle = CostModel.load_bundle(out)
    assert bundle["feature_columns"] == result.model.feature_columns
    meta = bundle["metadata"]
    assert meta["family"] == result.family and meta["metrics"] == result.metrics
    assert "xgboost-cpu" in meta["versions"] or "xgboost" in meta["versions"]
    assert meta["n_test"] + meta["n_train"] == meta["n_candidates"]
    table = load_table(glob_of(results))
    pd.testing.assert_frame_equal(bundle["model"].predict(table.X), result.model.predict(table.X))


def test_train_is_deterministic(results, tmp_path, no_mlflow):
    a = train(TrainConfig(input=glob_of(results), output=tmp_path / "a.pkl", seed=3),
              echo=lambda s: None)
    b = train(TrainConfig(input=glob_of(results), output=tmp_path / "b.pkl", seed=3),
              echo=lambda s: None)
    assert a.metrics == b.metrics and a.family == b.family


def test_cli_train_local(results, tmp_path, no_mlflow, capsys):
    out = tmp_path / "cm.pkl"
    rc = run_cli(["train", "--input", glob_of(results), "--output", str(out), "--seed", "1",
                  "--min-runs", "50"])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "selected" in text and "local only" in text and "done in" in text


# -- MLflow: registration, promotion, loading ------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture(scope="module")
def registered(results, mlflow_url, tmp_path_factory):
    """Promotion both ways: a weak model (first champion, v1), a good one (beats it: v2,
    champion), then the weak one again (does not: not registered, the registry stays at 2)."""
    out = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        lines: list[str] = []
        first = train(TrainConfig(input=glob_of(results), output=out / "first.pkl",
                                  params=WORSE), echo=lines.append)
        good = train(TrainConfig(input=glob_of(results), output=out / "good.pkl"),
                     echo=lines.append)
        worse = train(TrainConfig(input=glob_of(results), output=out / "worse.pkl",
                                  params=WORSE), echo=lines.append)
        yield {"first": first, "good": good, "worse": worse, "lines": lines, "out": out}


def _client(url):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=url)


@pytest.mark.services
def test_first_model_registered_and_champion(registered, mlflow_url):
    first = registered["first"]
    assert first.mlflow_run_id and first.model_version == "1"
    assert first.promoted is True and first.decision == "first-champion"
    client = _client(mlflow_url)
    mv = client.get_model_version(MODEL, "1")
    assert mv.tags["slicert.decision"] == "first-champion"
    assert float(mv.tags["slicert.score"]) == pytest.approx(first.score, abs=1e-5)
    assert any(line.startswith("promotion: first-champion: there is no champion yet -> "
                               "registered as v1") for line in registered["lines"])
    # the cost-model experiment opens in MLflow's machine-learning view
    exp = client.get_experiment_by_name("slicert-cost-model")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.services
def test_better_model_is_registered_and_promoted(registered, mlflow_url):
    first, good = registered["first"], registered["good"]
    assert good.model_version == "2" and good.promoted is True and good.decision == "promoted"
    assert good.champion_version == "1"
    # both scored on the same held-out candidates: the champion's score there is its own
    assert good.champion_score == pytest.approx(first.score, abs=1e-6)
    assert good.compared_score == pytest.approx(good.score, abs=1e-9)
    assert good.compared_candidates == good.n_test  # same split: no held-out row was seen
    assert good.score > first.score
    client = _client(mlflow_url)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    mv = client.get_model_version(MODEL, "2")
    assert mv.run_id == good.mlflow_run_id
    assert mv.tags["slicert.decision"] == "promoted"
    assert float(mv.tags["slicert.champion_score"]) == pytest.approx(first.score, abs=1e-5)
    assert "unseen in training by both models" in mv.tags["slicert.reason"]
    line = next(ln for ln in registered["lines"] if ln.startswith("promotion: promoted:"))
    assert f"{good.score:.3f} > champion v1 score {first.score:.3f}" in line
    assert line.endswith("registered as v2, now 'champion'")
    run = client.get_run(good.mlflow_run_id)
    assert run.data.metrics["promotion/promoted"] == 1.0
    assert run.data.metrics["selected/kernel_cycles/spearman"] > 0.9
    assert "xgboost/score" in run.data.metrics and "lightgbm/score" in run.data.metrics
    assert run.data.params["n_candidates"] == str(good.n_candidates)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "slicert-cost-model"
    # signature + input example are part of the logged model
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{MODEL}/2")
    assert info.signature is not None
    assert [c.name for c in info.signature.outputs.inputs] == TARGETS
    assert info.saved_input_example_info is not None


@pytest.mark.services
def test_worse_model_is_not_registered_and_does_not_take_the_alias(registered, mlflow_url):
    good, worse = registered["good"], registered["worse"]
    assert worse.model_version is None  # the registry does not grow with a worse model
    assert worse.promoted is False and worse.decision == "kept-champion"
    assert worse.champion_version == "2"
    # the champion was evaluated on the same held-out rows as the new model
    assert worse.champion_score == pytest.approx(good.score, abs=1e-6)
    assert worse.compared_score < worse.champion_score
    client = _client(mlflow_url)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert [v.version for v in client.search_model_versions(f"name = '{MODEL}'")] \
        in (["1", "2"], ["2", "1"])
    tags = client.get_run(worse.mlflow_run_id).data.tags  # the candidate, on its run
    assert tags["slicert.decision"] == "kept-champion" and tags["slicert.candidate"] == "true"
    assert tags["slicert.champion_version"] == "2"
    assert float(tags["slicert.champion_score"]) == pytest.approx(good.score, abs=1e-5)
    assert float(tags["slicert.compared_score"]) == pytest.approx(worse.score, abs=1e-5)
    metrics = client.get_run(worse.mlflow_run_id).data.metrics
    assert metrics["promotion/promoted"] == 0.0
    assert metrics["promotion/champion_score"] == pytest.approx(good.score)
    line = next(ln for ln in registered["lines"] if ln.startswith("promotion: kept-champion:"))
    assert f"{worse.score:.3f} <= champion v2 score {good.score:.3f}" in line
    assert "not registered ('champion' stays v2" in line


@pytest.mark.services
def test_new_process_loads_champion_by_alias(registered, mlflow_url, results, tmp_path):
    """A fresh interpreter, with slicert_ops unimportable, predicts through the alias."""
    table = load_table(glob_of(results))
    X = table.X.head(8)
    X.to_parquet(tmp_path / "X.parquet")
    script = (
        "import sys; sys.modules['slicert_ops'] = None\n"  # prove the pyfunc is self-contained
        "import mlflow, pandas as pd\n"
        f"X = pd.read_parquet({str(tmp_path / 'X.parquet')!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
        f"m.predict(X).to_parquet({str(tmp_path / 'pred.parquet')!r})\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred = pd.read_parquet(tmp_path / "pred.parquet")
    assert list(pred.columns) == TARGETS
    expected = registered["good"].model.predict(X)
    np.testing.assert_allclose(pred.to_numpy(), expected.to_numpy(), rtol=1e-6)


@pytest.mark.services
def test_load_champion_for_workers(registered, mlflow_url, results, tmp_path):
    script = (
        "import json, sys\n"
        "from slicert_ops.costmodel.loader import load_champion\n"
        "from slicert_ops.costmodel.features import candidate_features\n"
        f"run = {str(results / 'conv2d_5x5_latency' / 'run_0001')!r}\n"
        "man = json.load(open(run + '/manifest.json'))\n"
        "tvm = json.load(open(run + '/tvm_config.json'))\n"
        "c = load_champion()\n"
        "again = load_champion()\n"
        "out = c.predict_candidates({man['candidate_id']: candidate_features(man, tvm)})\n"
        "print(json.dumps({'version': c.version, 'cached': again is c, 'pred': out}))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == "2" and got["cached"] is True
    (pred,) = got["pred"].values()
    measured = json.loads((results / "conv2d_5x5_latency" / "run_0001" / "qemu_trace.json")
                          .read_text())["metrics"]["kernel_cycles"]
    assert pred["predicted_kernel_cycles"] == pytest.approx(measured, rel=0.1)
    assert set(pred) == {"predicted_kernel_cycles", "predicted_max_preemption_latency_cycles"}


def test_load_champion_without_mlflow(monkeypatch, caplog):
    from slicert_ops.costmodel.loader import load_champion

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level("WARNING", logger="slicert.costmodel"):
        assert load_champion() is None
    assert "MLFLOW_TRACKING_URI is not set" in caplog.text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens
    caplog.clear()
    with caplog.at_level("WARNING", logger="slicert.costmodel"):
        assert load_champion() is None
    assert "not reachable" in caplog.text


@pytest.mark.services
def test_load_champion_none_when_no_alias(mlflow_url, monkeypatch, caplog):
    from slicert_ops.costmodel.loader import load_champion

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    with caplog.at_level("WARNING", logger="slicert.costmodel"):
        assert load_champion(name="no-such-model") is None
    assert "no 'champion' alias" in caplog.text


@pytest.mark.services
def test_cli_model_list_show_promote(registered, mlflow_url, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    assert run_cli(["model", "list"]) == 0
    listing = capsys.readouterr().out
    lines = [ln.split() for ln in listing.splitlines()[1:]]
    assert lines[0][0] == "1" and lines[1][:2] == ["2", "champion"]
    assert len(lines) == 3 and lines[2][:2] == ["1", "trained"]  # 2 versions + the note
    assert "first-champion" in listing and "promoted" in listing
    assert "1 trained model(s) did not beat the champion and are not registered" in listing

    assert run_cli(["model", "show", "2"]) == 0
    shown = capsys.readouterr().out
    assert "slicert.decision = promoted" in shown and "slicert.champion_score" in shown
    assert "kernel_cycles/spearman" in shown

    assert run_cli(["model", "promote", "1"]) == 0
    confirm = capsys.readouterr().out
    assert "v1 is now 'champion' (was v2" in confirm
    client = _client(mlflow_url)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert "slicert.forced_promotion" in client.get_model_version(MODEL, "1").tags
    # give the alias back for tests that may run after this one
    assert run_cli(["model", "promote", "2"]) == 0
    capsys.readouterr()

    with pytest.raises(InputError, match="has no version 42"):
        run_cli(["model", "show", "42"])
