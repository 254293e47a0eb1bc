"""Does the per-layer cost model rank layers it has not seen? Leave one network out.

For each network experiment under RESULTS (run by `slicert run experiments/networks/*.yaml`),
train the cost model (XGBoost, the features of `slicert train`: nf1 layer features + schedule)
on the task candidates of the *other* networks and predict this network's task candidates:
Spearman over all of them, MAPE, and per tuning task whether the predicted-fastest schedule
is the measured-fastest (regret = its cycles / the best cycles).

Usage: .venv/bin/python bench/bench_layer_costmodel.py [RESULTS]   (default: results)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.costmodel.features import build_table, expand_input, index_from_traces  # noqa: E402
from slicert_ops.costmodel.models import make_model  # noqa: E402


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> int:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    idx = index_from_traces(expand_input(str(results / "**" / "qemu_trace.json")))
    idx = idx[idx.get("operator.type") == "network_task"]
    if idx.empty:
        raise SystemExit(f"no network task runs under {results}: run "
                         "`slicert run experiments/networks/<net>.yaml --out RESULTS` first")
    fingerprints = idx.groupby("experiment")["operator.fingerprint"].first()
    for held, fp in fingerprints.items():
        # train on other networks only (a variant of the same network is the same layers)
        train = build_table(idx[idx["operator.fingerprint"] != fp])
        test = build_table(idx[idx["experiment"] == held])
        if len(train) < 4 or len(test) < 2:
            continue
        model = make_model("xgboost").fit(train.X, train.y)
        p = model.predict(test.X.reindex(columns=model.feature_columns))["kernel_cycles"]
        p, y = p.to_numpy(), test.y["kernel_cycles"].to_numpy()
        task_of = idx[idx["experiment"] == held].groupby("candidate_id")["operator.task"].first()
        tasks = task_of.reindex(test.candidate_ids).to_numpy()
        hits = n = 0
        regret = 1.0
        for t in sorted(set(tasks)):
            sel = tasks == t
            if sel.sum() < 2:
                continue
            n += 1
            pick = y[sel][np.argmin(p[sel])]
            hits += int(pick == y[sel].min())
            regret = max(regret, pick / y[sel].min())
        print(f"{held:<28} train {len(train):3d} / test {len(test):3d} task candidates: "
              f"Spearman {spearman(p, y):.3f}, MAPE {np.mean(np.abs(p - y) / y):.1%}, "
              f"fastest schedule picked in {hits}/{n} tasks, worst regret {regret:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
