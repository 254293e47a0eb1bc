"""Network firmware: generated layer kernels + a C function that runs them in order.

The network is packaged as one "kernel" for the existing firmware build
(``slicert_ops.firmware.build_firmware``, the microbench harness): ``kernel.c`` holds every
task's generated kernel, the weights as const arrays (flash), the activation arena (static,
``.bss``) and::

    void slicert_network(int8_t* input, int8_t* output)   /* float* for float32 networks */

which calls the ops in execution order, each between ``slicert_nn_layer_start(i)`` and
``slicert_nn_layer_end(i)`` (trace events 32/33, payload = op index; see
``zephyr/include/slicert/network.h``). The harness brackets it with kernel_start/kernel_end,
so the trace's kernel window is the whole inference. The input is a const array in flash,
the output the harness's output buffer.

A *dump* build (``dump=True``) also writes every op's output to semihosting stdout right after
the op (``SLICERT-LAYER <index 8 hex> <nbytes 8 hex>\\n`` + bytes): :func:`run_network` uses it
to name the first wrong layer when the output does not match the reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slicert_ops.errors import StageError

from .events import layer_metrics
from .kernels import LayerKernel, generate_layer_kernel
from .memory import MemoryPlan, check_board, plan_memory
from .network import Network, run_reference
from .spec import NETWORK_INPUT, NetworkError
from .tasks import LayerSchedule, Task, extract_tasks

ENTRY = "slicert_network"
ARENA = "slicert_nn_arena"
LAYER_MAGIC = b"SLICERT-LAYER "
CT = {"int8": "int8_t", "float32": "float", "int32": "int32_t"}


@dataclass
class NetworkBuild:
    net: Network
    plan: MemoryPlan
    tasks: list[Task]
    kernels: dict[str, LayerKernel]          # task key -> kernel
    c_source: str
    input: np.ndarray
    build: Any                               # slicert_ops.firmware.BuildResult
    out_dir: Path
    dump: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    runtime_dir: Path | None = None
    runtime_options: Any = None
    board: str = "lm3s6965evb"              # runner.board: port, QEMU machine, IRQ number

    @property
    def cpu_mhz(self) -> int:
        """Clock of the modelled core (runner.cpu_mhz): cycles per µs."""
        return int(getattr(self.runtime_options, "cpu_mhz", 50))

    @property
    def elf(self) -> Path:
        return self.build.elf

    def sizes(self) -> dict[str, int]:
        return {"text_bytes": self.build.text_bytes, "data_bytes": self.build.data_bytes,
                "bss_bytes": self.build.bss_bytes}


@dataclass
class NetworkRun:
    correct: bool
    output: np.ndarray | None
    expected: np.ndarray
    first_wrong_layer: str | None
    mismatch: str | None
    metrics: dict[str, Any]
    layers: list[dict[str, Any]]
    sim: Any
    seconds: dict[str, float] = field(default_factory=dict)  # host time: "reference"


def _c_values(arr: np.ndarray) -> str:
    flat = np.asarray(arr).ravel()
    if flat.dtype.kind == "f":
        if not np.all(np.isfinite(flat)):
            raise ValueError("non-finite value in a constant array")
        items = [f"{float(v)!r}f" for v in flat.astype(np.float32).tolist()]
    elif flat.dtype == np.int32:
        items = [str(v) if v != -(2**31) else "(-2147483647-1)" for v in flat.tolist()]
    else:
        items = [str(v) for v in flat.tolist()]
    return ",\n".join(",".join(items[i:i + 32]) for i in range(0, len(items), 32))


def _scalar(v: Any, ctype: str) -> str:
    if ctype == "float":
        return f"{float(np.float32(v))!r}f"
    v = int(v)
    return str(v) if v != -(2**31) else "(-2147483647-1)"


def _op_args(net: Network, op, kernel: LayerKernel, ptr) -> list[str]:
    """C argument expressions of one op's kernel call, in the kernel's parameter order."""
    from .network import act_bounds_f

    args = []
    buf_inputs = list(op.inputs)
    for name, ctype in kernel.params:
        if ctype.endswith("*"):
            base = ctype[:-1]
            if name in ("data", "a", "b"):
                t = buf_inputs[0 if name in ("data", "a") else 1]
                args.append(f"({base}*){ptr(t)}")
            elif name == "out":
                args.append(f"({base}*){ptr(op.output)}")
            else:
                args.append(f"({base}*)slicert_nn_{name}_{op.index}")
        else:
            if net.dtype == "float32" and name in ("act_min", "act_max"):
                lo, hi = act_bounds_f(op.activation)
                args.append(_scalar(lo if name == "act_min" else hi, "float"))
            else:
                args.append(_scalar(op.scalars[name], ctype))
    return args


def network_c_source(net: Network, plan: MemoryPlan, kernels: dict[str, LayerKernel],
                     op_task: dict[int, str], *, dump: bool = False) -> str:
    ct = CT[net.dtype]
    lines = [f"/* {ENTRY}: network {net.name!r} ({net.dtype}, {len(net.ops)} ops, "
             f"{net.macs} MACs, {net.params} parameters); generated by slicert_ops.network; "
             "do not edit.",
             f" * arena {plan.arena_bytes} bytes (liveness-based reuse), weights "
             f"{plan.weight_bytes} bytes in flash. */",
             "#include <stdint.h>", '#include "slicert/yield.h"',
             '#include "slicert/network.h"']
    if dump:
        lines.append('#include "slicert/runtime.h"')
    lines.append("")
    for key, k in kernels.items():
        lines.append(f"/* ---- task {key} ---- */")
        lines.append(k.c_source)
    lines.append("/* ---- constants (flash) ---- */")
    for op in net.ops:
        arrays = kernels[op_task[op.index]].pack(op.type, op.arrays, op.scalars)
        for name, arr in arrays.items():
            n = int(arr.size)
            lines.append(f"/* {op.label}: {name} {list(arr.shape)} */")
            lines.append(f"static const {CT[str(arr.dtype)]} slicert_nn_{name}_{op.index}[{n}] "
                         f"__attribute__((aligned(8))) = {{")
            lines.append(_c_values(arr))
            lines.append("};")
    for name, arr in net.consts.items():
        lines.append(f"/* const input tensor {name} {list(arr.shape)} */")
        lines.append(f"static const {ct} slicert_nn_{name}[{arr.size}] "
                     "__attribute__((aligned(8))) = {")
        lines.append(_c_values(arr))
        lines.append("};")
    lines.append("")
    if plan.arena_bytes:
        lines.append(f"static uint8_t {ARENA}[{plan.arena_bytes}] __attribute__((aligned(8)));")
    final = net.ops[-1].output

    def ptr(tensor: str) -> str:
        if tensor == NETWORK_INPUT:
            return "input"
        if tensor in net.consts:
            return f"slicert_nn_{tensor}"
        if tensor == final:
            return "output"
        return f"({ARENA} + {plan.allocations[tensor].offset})"

    if dump:
        lines += [
            "static void slicert_nn_hex8(char *p, uint32_t v)",
            "{",
            "\tfor (int i = 7; i >= 0; i--) {",
            "\t\tuint32_t d = v & 15u;",
            "\t\tp[i] = (char)(d < 10u ? '0' + d : 'a' + d - 10u);",
            "\t\tv >>= 4;",
            "\t}",
            "}",
            "",
            "static void slicert_nn_dump(uint32_t index, const void *data, uint32_t n)",
            "{",
            "\tchar head[32] = \"SLICERT-LAYER 00000000 00000000\\n\";",
            "",
            "\tslicert_nn_hex8(head + 14, index);",
            "\tslicert_nn_hex8(head + 23, n);",
            "\tslicert_port_write_stdout(head, 32);",
            "\tslicert_port_write_stdout(data, n);",
            "}",
            "",
        ]
    lines.append(f"void {ENTRY}({ct}* input, {ct}* output);")
    lines.append(f"void {ENTRY}({ct}* input, {ct}* output)")
    lines.append("{")
    for op in net.ops:
        k = kernels[op_task[op.index]]
        call = f"{k.entry}({', '.join(_op_args(net, op, k, ptr))});"
        lines.append(f"\t/* op {op.index}: {op.label} ({op.type}) "
                     f"{list(op.layer.in_shapes[0])} -> {list(op.layer.out_shape)} */")
        lines.append(f"\tslicert_nn_layer_start({op.index}u);")
        lines.append(f"\t{call}")
        lines.append(f"\tslicert_nn_layer_end({op.index}u);")
        if dump:
            lines.append(f"\tslicert_nn_dump({op.index}u, {ptr(op.output)}, "
                         f"{net.tensors[op.output].nbytes}u);")
    lines.append("}")
    lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class _KernelArgs:
    """What slicert_ops.firmware.build_firmware needs of a kernel."""

    c_source: str
    entry: str
    args: tuple[tuple[str, str, tuple[int, ...]], ...]


def generate_kernels(net: Network, schedules: dict[str, LayerSchedule] | None = None,
                     tasks: list[Task] | None = None
                     ) -> tuple[list[Task], dict[str, LayerKernel], dict[int, str]]:
    """One kernel per task (``schedules``: task key -> schedule; default schedule otherwise)."""
    tasks = tasks if tasks is not None else extract_tasks(net)
    schedules = schedules or {}
    kernels: dict[str, LayerKernel] = {}
    op_task: dict[int, str] = {}
    for task in tasks:
        kernels[task.key] = generate_layer_kernel(task, schedules.get(task.key))
        for i in task.ops:
            op_task[i] = task.key
    return tasks, kernels, op_task


def build_network_firmware(net: Network, out_dir: str | Path, *,
                           schedules: dict[str, LayerSchedule] | None = None,
                           tasks: list[Task] | None = None,
                           runtime_options: Any = None, board: str = "lm3s6965evb",
                           dump: bool = False, x: np.ndarray | None = None,
                           kernel_stack_bytes: int = 4096,
                           runtime_dir: str | Path | None = None) -> NetworkBuild:
    """Generate every kernel, plan the memory, check the board, write ``kernel.c`` and build
    ``out_dir/firmware.elf`` with the project's firmware build for ``board``
    (lm3s6965evb, or mps2-an385 for networks that need more than 248 KiB / 64 KiB;
    mps2-an386: the Cortex-M4F, hard float, cycle model cm4-v1)."""
    from slicert_ops.firmware import build_firmware
    from slicert_ops.firmware.boards import BOARDS as FIRMWARE_BOARDS

    if board not in FIRMWARE_BOARDS:
        raise StageError("build", f"board {board!r}: the firmware build has no port for it "
                                  f"(supported: {', '.join(FIRMWARE_BOARDS)})")
    t0 = time.perf_counter()
    plan = plan_memory(net)
    probs = check_board(net, plan, board)
    if probs:
        raise NetworkError(probs)
    tasks, kernels, op_task = generate_kernels(net, schedules, tasks)
    t1 = time.perf_counter()
    src = network_c_source(net, plan, kernels, op_task, dump=dump)
    x = net.make_input() if x is None else x
    ct = CT[net.dtype]
    kargs = _KernelArgs(c_source=src, entry=ENTRY,
                        args=(("input", ct, tuple(net.input.shape)),
                              ("output", ct, tuple(net.output.shape))))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = build_firmware(kargs, [x], runtime_options, out, kernel_stack_bytes=kernel_stack_bytes,
                         runtime_dir=runtime_dir, board=board)
    t2 = time.perf_counter()
    return NetworkBuild(net=net, plan=plan, tasks=tasks, kernels=kernels, c_source=src,
                        input=x, build=res, out_dir=out, dump=dump,
                        seconds={"codegen": t1 - t0, "build": t2 - t1},
                        runtime_dir=Path(runtime_dir) if runtime_dir else None,
                        runtime_options=runtime_options, board=board)


def parse_layer_dumps(stdout: bytes) -> dict[int, bytes]:
    """``{op index: bytes}`` from a dump build's stdout."""
    out: dict[int, bytes] = {}
    pos = 0
    while True:
        pos = stdout.find(LAYER_MAGIC, pos)
        if pos < 0:
            return out
        head = stdout[pos + len(LAYER_MAGIC):pos + len(LAYER_MAGIC) + 18]
        idx, n = int(head[:8], 16), int(head[9:17], 16)
        start = pos + len(LAYER_MAGIC) + 18
        out[idx] = stdout[start:start + n]
        pos = start + n


def _compare(net: Network, got: np.ndarray, want: np.ndarray, rtol: float, atol: float
             ) -> str | None:
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if net.dtype == "int8":
        bad = np.flatnonzero(got.ravel() != want.ravel())
    else:
        bad = np.flatnonzero(~np.isclose(got.ravel(), want.ravel(), rtol=rtol, atol=atol))
    if bad.size == 0:
        return None
    i = int(bad[0])
    return (f"{bad.size} of {got.size} values differ; first at flat index {i}: got "
            f"{got.ravel()[i]}, expected {want.ravel()[i]}")


def run_network(nb: NetworkBuild, out_dir: str | Path, *, seed: int = 0,
                timeout_s: float = 120.0, deadline_us: int | None = None,
                locate: bool = True, rtol: float = 1e-4, atol: float = 1e-4,
                ws: int = 0) -> NetworkRun:
    """Run the firmware in QEMU under the cycle plugin, check the output against the numpy
    reference (int8: bit-exact; float32: within rtol/atol) and compute network and per-layer
    metrics (``deadline_us``: the RT deadline, µs of the modelled clock). On a mismatch
    (and ``locate``), rebuild with per-layer dumps and name the first op whose output
    differs."""
    from slicert_ops.paths import PLUGIN_SO
    from slicert_ops.sim import events as ev
    from slicert_ops.sim.qemu import run_firmware
    from slicert_ops.sim.trace import compute_metrics

    net = nb.net
    out = Path(out_dir)
    sim = run_firmware(nb.elf, seed=seed, out_dir=out, timeout_s=timeout_s, plugin=PLUGIN_SO,
                       board=nb.board, ws=ws)
    sim.raise_for_status()
    t_ref = time.perf_counter()
    values = run_reference(net, nb.input)
    final = net.ops[-1].output
    want = values[final]
    dt = np.dtype(np.int8) if net.dtype == "int8" else np.dtype("<f4")
    got = np.frombuffer(sim.output, dtype=dt).reshape(want.shape) if sim.output is not None \
        else None
    mismatch = _compare(net, got, want, rtol, atol) if got is not None else "no output"
    first_wrong = None
    if mismatch and locate:
        if nb.dump:
            dumps = parse_layer_dumps(sim.stdout)
        else:
            from slicert_ops.firmware import RuntimeOptions

            nb2 = build_network_firmware(net, out / "locate", tasks=nb.tasks,
                                         schedules={k: v.schedule
                                                    for k, v in nb.kernels.items()},
                                         runtime_options=RuntimeOptions(
                                             slice_us=0, cpu_mhz=nb.cpu_mhz),
                                         dump=True, x=nb.input, runtime_dir=nb.runtime_dir,
                                         board=nb.board)
            sim2 = run_firmware(nb2.elf, seed=seed, out_dir=out / "locate",
                                timeout_s=timeout_s, plugin=PLUGIN_SO, board=nb.board, ws=ws)
            dumps = parse_layer_dumps(sim2.stdout)
        for op in net.ops:
            ref = values[op.output]
            raw = dumps.get(op.index)
            if raw is None or len(raw) != ref.nbytes:
                first_wrong = op.label
                mismatch += f"; op {op.index} ({op.label}) produced no complete dump"
                break
            diff = _compare(net, np.frombuffer(raw, dtype=dt).reshape(ref.shape), ref, rtol,
                            atol)
            if diff:
                first_wrong = op.label
                mismatch += f"; first wrong layer: {op.label} (op {op.index}, {op.type}): {diff}"
                break
    ref_s = time.perf_counter() - t_ref
    deadline_cycles = deadline_us * nb.cpu_mhz if deadline_us else None
    metrics = compute_metrics(sim.events, sim.totals, nb.sizes(), mismatch is None,
                              deadline_cycles=deadline_cycles,
                              irq_exception=ev.irq_load_exception(nb.board))
    layers = layer_metrics(net, sim.events, deadline_cycles=deadline_cycles,
                           irq_exception=ev.irq_load_exception(nb.board))
    metrics["network_cycles"] = metrics["wall_cycles"]
    metrics["network_macs"] = net.macs
    metrics["macs_per_cycle"] = round(net.macs / max(1, metrics["kernel_cycles"]), 4)
    metrics["arena_bytes"] = nb.plan.arena_bytes
    return NetworkRun(correct=mismatch is None, output=got, expected=want,
                      first_wrong_layer=first_wrong, mismatch=mismatch, metrics=metrics,
                      layers=layers, sim=sim, seconds={"reference": ref_s})


def network_report(net: Network, plan: MemoryPlan) -> dict[str, Any]:
    """MACs, parameters and memory of a network (no build)."""
    return {**net.summary(), "arena_bytes": plan.arena_bytes, "ram_bytes": plan.ram_bytes,
            "flash_data_bytes": plan.flash_data_bytes, "peak_live_bytes": plan.peak_live_bytes,
            "naive_bytes": plan.naive_bytes,
            "largest_tensor": max((math.prod(t.shape) for t in net.tensors.values()),
                                  default=0)}


def task_firmware(net: Network, task: Task, out_dir: str | Path, *,
                  schedule: LayerSchedule | None = None, runtime_options: Any = None,
                  x: np.ndarray | None = None, board: str = "lm3s6965evb") -> NetworkBuild:
    """The firmware of one tuning task alone: its first op as a one-op network, on the input
    that op sees in the network (what a per-task sweep measures)."""
    import dataclasses

    from .network import task_network

    sub, x0 = task_network(net, task.ops[0], x)
    own = extract_tasks(sub)
    if len(own) != 1 or own[0].signature != task.signature:
        raise RuntimeError(f"task {task.key}: its one-op network has another kernel")
    sub_tasks = [dataclasses.replace(task, ops=[0], layer_names=[sub.ops[0].label])]
    return build_network_firmware(sub, out_dir, tasks=sub_tasks,
                                  schedules={task.key: schedule} if schedule else None,
                                  runtime_options=runtime_options, x=x0, board=board)


def measure_task(net: Network, task: Task, out_dir: str | Path, *,
                 schedule: LayerSchedule | None = None, runtime_options: Any = None,
                 seed: int = 0, timeout_s: float = 120.0, deadline_us: int | None = None,
                 x: np.ndarray | None = None, board: str = "lm3s6965evb") -> NetworkRun:
    """Build and run the firmware of one tuning task alone (:func:`task_firmware`).
    ``run.layers[0]`` holds the op's metrics; the output is checked like a network's."""
    out = Path(out_dir)
    nb = task_firmware(net, task, out / "fw", schedule=schedule,
                       runtime_options=runtime_options, x=x, board=board)
    return run_network(nb, out / "run", seed=seed, timeout_s=timeout_s,
                       deadline_us=deadline_us)


def network_artifacts(nb: NetworkBuild, run: NetworkRun, *, candidate_id: str, repeat: int = 0,
                      seed: int = 0) -> dict[str, Any]:
    """The run-folder documents of a network run, for ``slicert_ops.rundir`` to write:

    - ``qemu_trace.json``: the contract's trace (schema ``slicert-trace/1``, events with
      ``layer_start``/``layer_end`` named) plus ``network`` (summary, memory plan) and
      ``layers`` (per-op metrics and schedule);
    - ``cycles.txt`` metrics: the headline figures plus ``network_cycles``, ``network_macs``,
      ``macs_per_cycle``, ``arena_bytes`` (per-layer figures stay in the trace and the index);
    - ``tvm_config.json``: per task, its signature, schedule, prototype and schedule trace;
    - ``layers`` rows for the index (one per op).
    """
    from slicert_ops.sim.trace import build_trace

    trace = build_trace(run.sim.events, run.sim.totals, candidate_id=candidate_id,
                        repeat=repeat, seed=seed, exit_code=run.sim.exit_code or 0,
                        sizes=nb.sizes(), metrics=run.metrics, cpu_mhz=nb.cpu_mhz,
                        board=nb.board)
    schedules = {}
    for task in nb.tasks:
        for i in task.ops:
            schedules[i] = {"task": task.key, **nb.kernels[task.key].schedule.to_dict()}
    layers = [dict(row, schedule=schedules.get(row["op"])) for row in run.layers]
    trace["network"] = {**nb.net.summary(), "fingerprint": nb.net.fingerprint(),
                        "memory": nb.plan.to_dict(), "first_wrong_layer": run.first_wrong_layer}
    trace["layers"] = layers
    return {"qemu_trace.json": trace, "cycles": dict(run.metrics),
            "tvm_config.json": network_tvm_config(nb), "layers": layers}


def network_tvm_config(nb: NetworkBuild) -> dict[str, Any]:
    """``tvm_config.json`` of a network build: per task its signature, schedule, prototype
    and schedule trace."""
    return {"network": nb.net.summary(),
            "tasks": [{"key": t.key, "type": t.type, "layers": t.layer_names,
                       "weight": t.weight, **nb.kernels[t.key].tvm_config}
                      for t in nb.tasks]}
