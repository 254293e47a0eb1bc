"""Whole networks, layer by layer (issue 9). See docs/networks.md.

Pure-Python entry points (no TVM import):

- :func:`load_network` (manifest dict -> checked :class:`Network`, all problems at once as a
  :class:`NetworkError`), :func:`parse_network`, :func:`make_network`, :func:`run_reference`
- :func:`task_spaces` / :func:`extract_tasks` / :func:`default_schedule` (tuning tasks and
  per-layer schedule spaces), :func:`plan_memory` / :func:`check_board` (memory plan)
- :mod:`.models`: the MLPerf Tiny v1 reference architectures

TVM / gcc / QEMU (imported on first use): :func:`generate_layer_kernel`,
:func:`build_network_firmware`, :func:`run_network`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .events import LAYER_END, LAYER_START
from .memory import BOARDS, MemoryPlan, check_board, plan_memory
from .network import Network, Op, make_network, run_op, run_reference, task_network
from .spec import LAYER_TYPES, Layer, NetworkError, NetworkSpec, Problem, parse_network
from .tasks import (
    LayerSchedule,
    Task,
    default_schedule,
    extract_tasks,
    parse_parameters,
    task_spaces,
)

if TYPE_CHECKING:
    from .firmware import (
        NetworkBuild,
        NetworkRun,
        build_network_firmware,
        measure_task,
        network_artifacts,
        run_network,
    )
    from .kernels import LayerKernel, generate_layer_kernel
    from .tune import TuneResult, tune_network

_LAZY = {"generate_layer_kernel": "kernels", "LayerKernel": "kernels",
         "build_network_firmware": "firmware", "run_network": "firmware",
         "NetworkBuild": "firmware", "NetworkRun": "firmware", "measure_task": "firmware",
         "network_artifacts": "firmware",
         "tune_network": "tune", "TuneResult": "tune"}

__all__ = [
    "BOARDS", "LAYER_END", "LAYER_START", "LAYER_TYPES", "Layer", "LayerKernel",
    "LayerSchedule", "MemoryPlan", "Network", "NetworkBuild", "NetworkError", "NetworkRun",
    "NetworkSpec", "Op", "Problem", "Task", "build_network_firmware", "check_board",
    "default_schedule", "extract_tasks", "generate_layer_kernel", "is_network_manifest",
    "load_network", "make_network", "measure_task", "parse_network", "parse_parameters",
    "plan_memory", "run_network", "run_op", "run_reference", "task_network", "task_spaces",
    "TuneResult", "network_artifacts", "tune_network",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _experiment(manifest: dict[str, Any]) -> dict[str, Any]:
    exp = manifest.get("experiment", manifest) if isinstance(manifest, dict) else None
    if not isinstance(exp, dict):
        raise NetworkError([Problem("experiment", "must be a mapping")])
    return exp


def is_network_manifest(manifest: dict[str, Any]) -> bool:
    """True when the manifest describes a network (``experiment.model``)."""
    try:
        return "model" in _experiment(manifest)
    except NetworkError:
        return False


def load_network(manifest: dict[str, Any], path: str | Path | None = None, *,
                 board: str | None = None) -> Network:
    """The checked network of a manifest (the whole manifest dict or its ``experiment``).

    Checks, before any work and all at once: the layers (unknown type or field, bad value,
    shape mismatch), the schedule space (``experiment.parameters``: unknown op type / layer
    name / parameter, a space with no valid schedule) and the memory plan against the board
    (``board`` or ``experiment.runner.board``, default lm3s6965evb; too big suggests
    ``runner.board: mps2-an385``). Raises :class:`NetworkError` (an ``InputError``: exit
    status 2) naming the file, each layer, field and fix.
    """
    source = str(path) if path is not None else None
    exp = _experiment(manifest)
    model = exp.get("model")
    if model is None:
        raise NetworkError([Problem("experiment.model", "missing: a network manifest needs "
                                    "experiment.model.layers")], source)
    weights = None
    if isinstance(model, dict) and "onnx" in model:
        model, weights = _onnx_model(model, path, source)
    spec = parse_network(model, source=source)
    net = make_network(spec, weights)
    runner = exp.get("runner") or {}
    board = board or (runner.get("board") if isinstance(runner, dict) else None) \
        or "lm3s6965evb"
    tasks, _spaces, probs = task_spaces(net, exp.get("parameters"))
    plan = plan_memory(net)
    probs += check_board(net, plan, board, kernels=len(tasks))
    if probs:
        raise NetworkError(probs, source)
    return net


def _onnx_model(model: dict[str, Any], path: str | Path | None, source: str | None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """experiment.model.onnx (relative to the manifest) -> (model dict, float weights)."""
    from .onnx_import import import_onnx

    extra = set(model) - {"onnx", "name", "dtype", "seed", "description"}
    if extra:
        raise NetworkError([Problem(f"experiment.model.{sorted(extra)[0]}", "not allowed "
                                    "with experiment.model.onnx (the ONNX file gives the "
                                    "layers and the input)", "remove it")], source)
    rel = Path(str(model["onnx"]))
    onnx_path = rel if rel.is_absolute() or path is None else Path(path).parent / rel
    try:
        imported, weights = import_onnx(onnx_path, name=model.get("name"),
                                        dtype=model.get("dtype", "int8"),
                                        seed=model.get("seed", 0))
    except NetworkError as exc:
        raise NetworkError(exc.problems, source) from None
    return imported, weights
