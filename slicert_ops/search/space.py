"""The search space: the manifest's expanded candidates and their features.

Features are the cost-model package's (``costmodel.features.candidate_features``) over the
codegen features of ``codegen.features`` (shapes and schedule numbers only: no TVM, about
0.2 ms per candidate), so a space of thousands is ranked without generating any code, and
the champion model and the search's own model see the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slicert_ops.manifest import Candidate


@dataclass
class SearchSpace:
    candidates: list[Candidate]
    _by_id: dict[str, int] = field(default_factory=dict, repr=False)
    _features: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {c.id: i for i, c in enumerate(self.candidates)}
        if len(self._by_id) != len(self.candidates):
            raise ValueError("duplicate candidate ids in the search space")

    def __len__(self) -> int:
        return len(self.candidates)

    def position(self, cand_id: str) -> int:
        """Position of a candidate in ``candidates`` (not its expansion index)."""
        return self._by_id[cand_id]

    def features(self) -> Any:
        """pandas DataFrame, one row per candidate (same order), float64."""
        if self._features is None:
            self._features = feature_frame_of(self.candidates)
        return self._features

    def rows(self, cands: Sequence[Candidate]) -> Any:
        frame = self.features()
        return frame.iloc[[self._by_id[c.id] for c in cands]]


def kernel_features(cand: Candidate) -> dict[str, float]:
    """The codegen features of a candidate before any code exists: an operator's
    (``codegen.features``) or a network task's layer features (``network.features``)."""
    if cand.operator.get("type") == "network_task":
        from slicert_ops.network.candidates import task_features

        return task_features(cand)
    from slicert_ops.codegen.features import features
    from slicert_ops.codegen.spec import ScheduleParams
    from slicert_ops.manifest.expand import operator_spec_from_dict

    return features(operator_spec_from_dict(cand.operator), ScheduleParams(**cand.schedule))


def feature_row(cand: Candidate) -> dict[str, float]:
    from slicert_ops.costmodel.features import candidate_features

    feats = kernel_features(cand)
    # versions: the cycle model is a feature of the cost model package (a champion trained
    # on cm3-v1 and cm3-v2 runs tells them apart); constant within a search space
    manifest = {"operator": cand.operator, "schedule": cand.schedule, "runner": cand.runner,
                "versions": cand.versions}
    return candidate_features(manifest, {"features": feats})


def feature_frame_of(cands: Sequence[Candidate]) -> Any:
    from slicert_ops.costmodel.features import feature_frame

    frame = feature_frame([feature_row(c) for c in cands])
    return frame.reset_index(drop=True)
