"""A network manifest as candidates: per-task schedules first, then whole networks.

Two kinds of candidate (``Candidate.operator["type"]``):

- ``network_task``: one tuning task (a kernel shared by identical layers) with one schedule
  of its space and one slice budget, measured alone (its first layer in its own firmware,
  on the input it sees in the network). Only tasks whose space holds more than one schedule
  get them (a single schedule is not a choice; the network run measures every layer), and
  their default schedule is measured too, as the baseline the best must beat.
- ``network``: the whole network with one schedule per task (``schedule`` maps
  ``<first layer of the task>.<parameter>`` and ``slice``), measured end to end. The plan
  has one per slice value with the base schedules (a task's only schedule, else its
  default); :func:`tuned_candidates` adds the network of the best measured schedule per
  task once the task candidates have run.

The candidate id covers the network's fingerprint (architecture, quantisation and weights),
the task and the schedule; ``Candidate.network`` carries what a worker needs to rebuild the
network (the manifest's ``model`` and ``parameters``), outside the id.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .network import Network
from .tasks import LayerSchedule, Task, default_schedule, micro_tiles, resolve, task_spaces

if TYPE_CHECKING:
    from slicert_ops.manifest import Experiment
    from slicert_ops.manifest.candidate import Candidate

NETWORK = "network"
NETWORK_TASK = "network_task"


@dataclass(frozen=True)
class NetworkContext:
    """The checked network of a candidate, its tasks and their schedule spaces."""

    net: Network
    tasks: list[Task]
    spaces: dict[str, list[LayerSchedule]]

    def task(self, key: str) -> Task:
        for t in self.tasks:
            if t.key == key:
                return t
        raise KeyError(f"network {self.net.name}: no task {key}")

    def first_layer(self, task: Task) -> str:
        return self.net.ops[task.ops[0]].name

    @functools.cached_property
    def fingerprint(self) -> str:
        """The network's fingerprint, hashed once (every candidate's operator carries it)."""
        return self.net.fingerprint()

    def base(self, task: Task) -> LayerSchedule:
        """The schedule a task has before tuning: its space's only one, else its default."""
        space = self.spaces[task.key]
        return space[0] if len(space) == 1 else resolve(task, default_schedule(task))

    def choices(self, task: Task) -> list[LayerSchedule]:
        """What a task's candidates measure: its space plus the default as the baseline
        (nothing when the space holds one schedule: no choice to make)."""
        space = list(self.spaces[task.key])
        if len(space) < 2:
            return []
        base = self.base(task)
        return space if base in space else [*space, base]


def load_context(network: Mapping[str, Any], board: str) -> NetworkContext:
    """The network of ``Candidate.network`` (cached per process: a sweep builds many)."""
    key = {k: network.get(k) for k in ("model", "parameters", "source")}
    return _cached(json.dumps(key, sort_keys=True, default=str), board)


@functools.lru_cache(maxsize=8)
def _cached(blob: str, board: str) -> NetworkContext:
    from . import load_network

    spec = json.loads(blob)
    exp = {"model": spec["model"], "parameters": spec.get("parameters") or {},
           "runner": {"board": board}}
    net = load_network({"experiment": exp}, spec.get("source"), board=board)
    tasks, spaces, _ = task_spaces(net, _task_parameters(exp["parameters"]))
    return NetworkContext(net, tasks, spaces)


def _task_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in parameters.items() if k != "slice"}


def network_schedule(ctx: NetworkContext, schedules: Mapping[str, LayerSchedule],
                     slice_us: int) -> dict[str, int]:
    """The flat schedule of a network candidate: ``<first layer>.<parameter>`` per task."""
    out: dict[str, int] = {}
    for task in ctx.tasks:
        sched = resolve(task, schedules.get(task.key) or ctx.base(task))
        for k, v in sched.to_dict().items():
            if v is not None:
                out[f"{ctx.first_layer(task)}.{k}"] = int(v)
    out["slice"] = int(slice_us)
    return out


def schedules_of(ctx: NetworkContext, schedule: Mapping[str, int]) -> dict[str, LayerSchedule]:
    """Per task key, the LayerSchedule of a network candidate's flat schedule."""
    out = {}
    for task in ctx.tasks:
        prefix = ctx.first_layer(task) + "."
        own = {k[len(prefix):]: v for k, v in schedule.items() if k.startswith(prefix)}
        out[task.key] = LayerSchedule(**own) if own else ctx.base(task)
    return out


def _operator(ctx: NetworkContext, kind: str, task: Task | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"type": kind, "network": ctx.net.name,
                          "fingerprint": ctx.fingerprint, "dtype": ctx.net.dtype}
    if task is not None:
        op.update(task=task.key, op_type=task.type, layers=list(task.layer_names),
                  weight=task.weight)
    return op


def expand_network(exp: Experiment, versions: dict[str, str]) -> list[Candidate]:
    """Task candidates (tasks with a choice, and their default), then one network per slice
    value with the base schedules."""
    from slicert_ops.manifest.candidate import Candidate, candidate_id

    network = network_spec(exp)
    ctx = load_context(network, exp.runner["board"])
    slices = list(exp.parameters.get("slice") or [64])
    cands: list[Candidate] = []

    def add(operator: dict[str, Any], schedule: dict[str, int], **extra: str) -> None:
        cid = candidate_id(operator, schedule, exp.runner, versions)
        cands.append(Candidate(index=len(cands), id=cid, operator=operator, schedule=schedule,
                               runner=dict(exp.runner), versions=dict(versions),
                               network={**network, **extra}))

    for task in ctx.tasks:
        for sched in ctx.choices(task):
            for s in slices:
                sd = {k: int(v) for k, v in sched.to_dict().items() if v is not None}
                add(_operator(ctx, NETWORK_TASK, task), {**sd, "slice": int(s)})
    for s in slices:
        add(_operator(ctx, NETWORK), network_schedule(ctx, {}, s), schedules="default")
    return cands


def task_schedule(schedule: Mapping[str, int]) -> LayerSchedule:
    """The LayerSchedule of a task candidate's schedule (``slice`` is the runtime's)."""
    return LayerSchedule(**{k: v for k, v in schedule.items() if k != "slice"})


def task_feature_row(task: Task, sched: LayerSchedule) -> dict[str, float]:
    """A task candidate's features: the layer features (nf5) and its yield checks
    (``micro_tiles``, which validation compares with the trace)."""
    from .features import layer_features

    return {**layer_features(task, sched),
            "micro_tiles": float(micro_tiles(task, sched))}


def task_features(cand: Candidate) -> dict[str, float]:
    """The features of a task candidate before it is built, as its tvm_config.json will
    hold them."""
    ctx = load_context(cand.network or {}, str(cand.runner.get("board") or "lm3s6965evb"))
    return task_feature_row(ctx.task(cand.operator["task"]), task_schedule(cand.schedule))


def network_spec(exp: Experiment) -> dict[str, Any]:
    """What a worker needs to rebuild the network (``Candidate.network``)."""
    return spec_of(exp.model, exp.parameters, exp.source)


def spec_of(model: Any, parameters: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``Candidate.network`` of a manifest's model and parameters (``slice`` is not the
    network's: it is each candidate's)."""
    return {"model": model, "parameters": _task_parameters(parameters), "source": source}


def task_trials(cands: list[Candidate], metrics_of: Callable[[Candidate], dict | None]
                ) -> dict[tuple[str, int], list[tuple[Candidate, dict[str, Any]]]]:
    """Measured task candidates grouped by (task key, slice)."""
    out: dict[tuple[str, int], list[tuple[Candidate, dict[str, Any]]]] = {}
    for c in cands:
        if c.operator.get("type") != NETWORK_TASK:
            continue
        m = metrics_of(c)
        if m:
            out.setdefault((c.operator["task"], c.schedule["slice"]), []).append((c, m))
    return out


def tuned_candidates(exp: Experiment, cands: list[Candidate],
                     metrics_of: Callable[[Candidate], dict | None],
                     objective: Any) -> tuple[list[Candidate], list[str]]:
    """Per slice value, the network of the best measured schedule per task (under the
    search objective: feasible first, then the lowest objective value; correct runs only).
    Tasks without measured candidates keep their base schedule. Returns (new candidates,
    notes); a network equal to one already planned is not repeated."""
    from slicert_ops.manifest.candidate import Candidate, candidate_id

    nets = [c for c in cands if c.operator.get("type") == NETWORK]
    if not nets:
        return [], []
    ctx = load_context(nets[0].network or {}, exp.runner["board"])
    trials = task_trials(cands, metrics_of)
    known = {c.id for c in cands}
    out: list[Candidate] = []
    notes: list[str] = []
    next_index = max(c.index for c in cands) + 1
    for base in nets:
        s = base.schedule["slice"]
        picks: dict[str, LayerSchedule] = {}
        for task in ctx.tasks:
            rows = [(c, m) for c, m in trials.get((task.key, s), []) if m.get("correct")]
            if not rows:
                continue
            best, feasible = _best(rows, objective)
            picks[task.key] = task_schedule(best.schedule)
            if not feasible:
                notes.append(f"{ctx.first_layer(task)}: no schedule meets "
                             f"{objective.describe()}; took the closest")
        schedule = network_schedule(ctx, picks, s)
        cid = candidate_id(base.operator, schedule, base.runner, base.versions)
        if cid in known:
            if base.id == cid:
                notes.append(f"slice {s}: the best measured schedule of every task is its "
                             "default one (the default network is the tuned one)")
            continue
        known.add(cid)
        out.append(Candidate(index=next_index, id=cid, operator=dict(base.operator),
                             schedule=schedule, runner=dict(base.runner),
                             versions=dict(base.versions),
                             network={**(base.network or {}), "schedules": "best per task"}))
        next_index += 1
    return out, notes


def _best(rows: list[tuple[Candidate, dict[str, Any]]], objective: Any
          ) -> tuple[Candidate, bool]:
    scored = []
    for c, m in rows:
        ev = objective.evaluate(m)
        value = ev.value if ev.value is not None else float("inf")
        # infeasible ones last, the closest first: the smallest relative overrun of the bounds
        over = sum(max(0.0, float(m.get(b.metric) or 0) - b.limit) / max(b.limit, 1.0)
                   for b in objective.bounds)
        scored.append(((not ev.feasible, over, value, c.index), c, ev.feasible))
    scored.sort(key=lambda t: t[0])
    return scored[0][1], scored[0][2]
