"""A candidate: one point of a schedule space with everything that determines its
measurement, and its content-hashed id (no other slicert_ops imports: every stage uses it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Runner fields that cannot change a measurement (excluded from the candidate id).
NON_MEASURING_RUNNER_FIELDS = ("timeout_s",)


@dataclass(frozen=True)
class Candidate:
    """One point of the schedule space, with everything that determines its measurement."""

    index: int
    id: str
    operator: dict[str, Any]
    schedule: dict[str, int]
    runner: dict[str, Any]
    versions: dict[str, str]
    # network candidates: what rebuilds the network (model, parameters; outside the id,
    # which covers the network's fingerprint); None for single operators
    network: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "id": self.id, "operator": self.operator,
               "schedule": self.schedule, "runner": self.runner, "versions": self.versions}
        if self.network is not None:
            out["network"] = self.network
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(index=data["index"], id=data["id"], operator=data["operator"],
                   schedule=data["schedule"], runner=data["runner"], versions=data["versions"],
                   network=data.get("network"))


def candidate_id(operator: dict[str, Any], schedule: dict[str, int], runner: dict[str, Any],
                 versions: dict[str, str]) -> str:
    measuring = {k: v for k, v in runner.items() if k not in NON_MEASURING_RUNNER_FIELDS}
    blob = json.dumps({"operator": operator, "schedule": schedule, "runner": measuring,
                       "versions": versions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
