"""The small interfaces of a search, after TVM meta_schedule (``tvm/s_tir/meta_schedule``).

Each concept is one abstract class plus value objects for what crosses it:

==================  ============================================  ==============================
concept             here                                          meta_schedule
==================  ============================================  ==============================
SearchStrategy      ``generate_measure_candidates()`` ->          ``SearchStrategy`` (same
                    ``list[MeasureCandidate]`` | None (done);     method names)
                    ``notify_runner_results(cands, results)``
CostModel           ``update(cands, results)``, ``predict(cands)  ``CostModel`` (same names)
                    -> {metric: array}``, ``save/load``
Measurer            ``measure(list[Candidate]) ->                 ``Builder.build`` +
                    list[MeasureResult]``                         ``Runner.run`` (fused: see below)
Database            ``lookup(cand)``, ``commit(trial)``,          ``Database``
                    ``trials()``; backed by the run folders
==================  ============================================  ==============================

Why Builder and Runner are one ``Measurer`` for the manifest space: the pipeline's unit of
work (``pipeline.run_candidate``) builds *and* runs one candidate inside one worker process
(codegen -> firmware -> QEMU per repeat -> run folder), which is what keeps a batch cheap.
The ``meta_schedule`` strategy, where TVM drives, uses real TVM ``PyBuilder``/``PyRunner``
subclasses made of the same stages (``search/meta_schedule.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from slicert_ops.manifest import Candidate
    from slicert_ops.search.objective import Objective
    from slicert_ops.search.space import SearchSpace


@dataclass(frozen=True)
class MeasureCandidate:
    """A candidate a strategy wants measured, and why (for the trial log)."""

    candidate: Candidate
    source: str                      # init | model | explore | random | grid | champion
    predicted: float | None = None   # the model's predicted objective, when it ranked it


@dataclass(frozen=True)
class MeasureResult:
    """One candidate measured (all repeats), as a strategy sees it."""

    candidate_id: str
    status: str                                        # ok | failed
    metrics: dict[str, Any] = field(default_factory=dict)  # aggregated over repeats
    reused: bool = False                               # served from the run folders
    error: str | None = None
    runs: tuple[int, ...] = ()                         # run folder numbers

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Trial:
    """One unit of budget spent: the n-th candidate the search measured."""

    number: int                 # 1-based, in the order the strategy proposed
    round: int
    candidate_id: str
    candidate_index: int
    schedule: dict[str, Any]
    source: str
    status: str                 # ok | failed
    value: float | None         # objective metric (None when failed)
    feasible: bool
    violations: list[str]
    reused: bool
    predicted: float | None = None
    error: str | None = None
    runs: list[int] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**d)


@dataclass
class SearchContext:
    """What a strategy may read: the space, the goal and the rules of the search."""

    space: SearchSpace
    objective: Objective
    budget: int
    seed: int = 0
    rounds: int | None = None
    exploration: float = 0.2
    options: dict[str, Any] = field(default_factory=dict)


class SearchStrategy(ABC):
    """Proposes batches of candidates; learns from their results."""

    name = "abstract"

    def pre_tuning(self, ctx: SearchContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def generate_measure_candidates(self, remaining: int) -> list[MeasureCandidate] | None:
        """The next batch (at most ``remaining`` long), or None when the search is done."""

    def notify_runner_results(self, cands: Sequence[MeasureCandidate],  # noqa: B027
                              results: Sequence[MeasureResult]) -> None:
        """Results of the last batch, in the same order."""
        return None

    def post_tuning(self) -> None:  # noqa: B027 - optional hook
        return None

    def describe(self) -> dict[str, Any]:
        """Settings worth recording with the result (JSON-able)."""
        return {"strategy": self.name}


class CostModel(ABC):
    """Predicts the objective's metrics of unmeasured candidates (lower is better)."""

    @abstractmethod
    def update(self, cands: Sequence[Candidate], results: Sequence[MeasureResult]) -> None:
        """Learn from measured candidates (ok results only carry metrics)."""

    @abstractmethod
    def predict(self, cands: Sequence[Candidate]) -> dict[str, np.ndarray]:
        """{metric: predicted values} for every metric the objective needs."""

    def save(self, path: str) -> None:  # pragma: no cover - optional
        raise NotImplementedError

    def load(self, path: str) -> None:  # pragma: no cover - optional
        raise NotImplementedError


class Measurer(ABC):
    """Builds and runs candidates (meta_schedule's Builder + Runner, see module doc)."""

    @abstractmethod
    def measure(self, cands: Sequence[Candidate]) -> list[MeasureResult]:
        """Measure every candidate (all repeats); results in the same order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        return None

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Database(ABC):
    """Remembers measurements (by candidate id) and the trials of this search."""

    @abstractmethod
    def lookup(self, cand: Candidate) -> MeasureResult | None:
        """A finished, successful measurement of this candidate, or None."""

    @abstractmethod
    def commit(self, trial: Trial) -> None:
        """Record one spent trial."""

    @abstractmethod
    def trials(self) -> list[Trial]:
        """Trials committed in this session, in order."""
