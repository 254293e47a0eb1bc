"""Issue #3 end to end with real services: a tracked sweep, training, promotion, loading.

Real TVM/gcc/QEMU measurements, a real SeaweedFS S3 server and a real MLflow server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.integration]

CLI = [sys.executable, "-m", "slicert_ops.cli"]
MANIFEST = """experiment:
  name: tracked_conv
  repeat: 3
  parameters:
    tile_size: [8, 16]
    unroll: [1, 2, 4, 8]
    slice: [64]
  runner:
    simulate_irq_load: true
    irq_period_us: 300
"""


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=900)


def rest(uri: str, path: str, **query: str) -> dict:
    url = f"{uri}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def child_runs(uri: str, experiment: str) -> list[dict]:
    exp_id = rest(uri, "experiments/get-by-name", experiment_name=experiment)[
        "experiment"]["experiment_id"]
    req = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/runs/search", method="POST",
        data=json.dumps({"experiment_ids": [exp_id], "max_results": 1000,
                         "filter": "tags.`slicert.kind` = 'measurement'"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()).get("runs", [])


def test_tracked_sweep_then_train_promote_and_load(slicert_services, tmp_path: Path) -> None:
    env = {**os.environ, **slicert_services.env}
    uri = env["MLFLOW_TRACKING_URI"]
    manifest = tmp_path / "tracked.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "results"

    res = cli(["run", str(manifest), "--out", str(out), "--jobs", "2", "--track"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "not uploaded" not in res.stderr, res.stderr[-3000:]
    runs = child_runs(uri, "tracked_conv")
    assert len(runs) == 8 * 3
    metrics = {m["key"]: m["value"] for m in runs[0]["data"]["metrics"]}
    assert metrics["correct"] == 1 and metrics["kernel_cycles"] > 0
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    # the whole run folder is in the object store
    keys = [o for o in slicert_services.s3().list("") if o.endswith("qemu_trace.json")]
    assert len(keys) >= 24
    for run_dir in sorted(out.glob("tracked_conv/run_*")):
        assert (run_dir / ".tracked").is_file() and (run_dir / "validation.html").is_file()

    # a re-run adds no duplicate MLflow runs
    res = cli(["run", str(manifest), "--out", str(out), "--track"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(child_runs(uri, "tracked_conv")) == 24

    # train on the traces: a registered version with the champion alias
    model_pkl = tmp_path / "cost_model.pkl"
    res = cli(["train", "--input", str(out / "**" / "qemu_trace.json"),
               "--output", str(model_pkl), "--min-runs", "12"], env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert model_pkl.is_file()
    alias = rest(uri, "registered-models/alias", name="slicert-cost-model", alias="champion")
    version = alias["model_version"]["version"]

    # a new process loads the champion by alias and predicts
    probe = ("import mlflow, pandas as pd, sys\n"
             "m = mlflow.pyfunc.load_model('models:/slicert-cost-model@champion')\n"
             "df = pd.read_parquet(sys.argv[1])\n"
             "cols = [c.name for c in m.metadata.get_input_schema().inputs]\n"
             "x = df.reindex(columns=cols).astype('float64')\n"
             "p = m.predict(x)\n"
             "print(float(p.iloc[:, 0].min()), len(p))\n")
    from slicert_ops.costmodel.features import candidate_features, feature_frame

    rows = []
    for run_dir in sorted(out.glob("tracked_conv/run_*"))[:4]:
        man = json.loads((run_dir / "manifest.json").read_text())
        cfg = json.loads((run_dir / "tvm_config.json").read_text())
        rows.append(candidate_features(man, cfg))
    feats = tmp_path / "features.parquet"
    feature_frame(rows).to_parquet(feats)
    res = subprocess.run([sys.executable, "-c", probe, str(feats)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lowest, n = res.stdout.split()
    assert float(lowest) > 0 and int(n) == 4

    # the next sweep's runs carry the champion's prediction and its version
    out2 = tmp_path / "results2"
    res = cli(["run", str(manifest), "--out", str(out2), "--track",
               "--set", "parameters.tile_size=[32]", "--set", "parameters.unroll=[2]",
               "--set", "experiment.repeat=1"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    man = json.loads((out2 / "tracked_conv" / "run_0001" / "manifest.json").read_text())
    assert man["cost_model"]["version"] == version
    assert man["cost_model"]["predicted_kernel_cycles"] > 0
