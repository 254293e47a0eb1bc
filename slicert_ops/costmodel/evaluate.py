"""Held-out split and the metrics a cost model is judged by.

- split: by candidate (the feature table has one row per candidate, so repeats never
  straddle it), a seeded permutation of the sorted candidate ids: same data + seed, same split;
- per target: ``spearman`` (rank correlation, within each task = operator + runner, weighted
  by its size), ``top5_recall`` (share of tasks whose truly best candidate is in the model's
  top 5), ``top5_overlap`` (|predicted top 5 & true top 5| / 5), ``mape`` (mean absolute
  percentage error as a fraction, over rows with a non-zero truth);
- ``score``: the mean Spearman over the targets where it is defined (a constant target,
  e.g. preemption latency without IRQ load, has none); what model selection and champion
  promotion compare.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

TOP_K = 5


def split_candidates(candidate_ids: pd.Series, seed: int,
                     test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over the rows; deterministic in (ids, seed)."""
    ids = np.asarray(candidate_ids, dtype=object)
    unique = np.array(sorted(set(ids)), dtype=object)
    n = len(unique)
    n_test = min(max(2, int(round(test_fraction * n))), n - 2)
    order = np.random.default_rng(seed).permutation(n)
    test_ids = set(unique[order[:n_test]])
    test = np.array([i in test_ids for i in ids], dtype=bool)
    return ~test, test


def _spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Rank correlation; undefined for a constant truth, 0 for a constant prediction."""
    if len(true) < 3 or np.ptp(true) == 0:
        return math.nan
    if np.ptp(pred) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(pred, true).statistic)


def _topk(pred: np.ndarray, true: np.ndarray, k: int = TOP_K) -> tuple[float, float]:
    k = min(k, len(true))
    pred_top = set(np.argsort(pred, kind="stable")[:k])
    true_top = set(np.argsort(true, kind="stable")[:k])
    best = int(np.argmin(true))
    # a tie for best counts as found when any tied candidate is predicted in the top k
    tied_best = set(np.flatnonzero(true == true[best]))
    return float(bool(pred_top & tied_best)), len(pred_top & true_top) / k


def target_metrics(pred: np.ndarray, true: np.ndarray, tasks: np.ndarray) -> dict[str, float]:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    rho_sum = rho_w = rec_sum = ovl_sum = rank_w = 0.0
    for task in sorted(set(tasks)):
        m = tasks == task
        if m.sum() < 2 or np.ptp(true[m]) == 0:
            continue
        rho = _spearman(pred[m], true[m])
        if not math.isnan(rho):
            rho_sum += rho * m.sum()
            rho_w += m.sum()
        recall, overlap = _topk(pred[m], true[m])
        rec_sum += recall * m.sum()
        ovl_sum += overlap * m.sum()
        rank_w += m.sum()
    nz = true > 0
    mape = float(np.mean(np.abs(pred[nz] - true[nz]) / true[nz])) if nz.any() else math.nan
    return {
        "spearman": rho_sum / rho_w if rho_w else math.nan,
        "top5_recall": rec_sum / rank_w if rank_w else math.nan,
        "top5_overlap": ovl_sum / rank_w if rank_w else math.nan,
        "mape": mape,
        "n": float(len(true)),
    }


def evaluate(pred: pd.DataFrame, truth: pd.DataFrame, tasks: pd.Series) -> dict[str, float]:
    """Flat metrics ``<target>/<metric>`` plus ``score``."""
    out: dict[str, float] = {}
    rhos = []
    tasks_arr = np.asarray(tasks, dtype=object)
    for target in truth.columns:
        m = target_metrics(pred[target].to_numpy(), truth[target].to_numpy(), tasks_arr)
        for k, v in m.items():
            out[f"{target}/{k}"] = v
        if not math.isnan(m["spearman"]):
            rhos.append(m["spearman"])
    out["score"] = float(np.mean(rhos)) if rhos else math.nan
    return out


def beats(new_score: float, champion_score: float | None, margin: float = 1e-9) -> bool:
    """True when the new score is strictly better (any score beats a missing/NaN one)."""
    if champion_score is None or math.isnan(champion_score):
        return not math.isnan(new_score)
    if math.isnan(new_score):
        return False
    return new_score > champion_score + margin
