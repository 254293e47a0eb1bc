"""Static memory plan: one activation arena, liveness-based reuse, no dynamic allocation.

- The network input is a const array in flash (read directly by the first op); the last op
  writes the output buffer; every other op output lives in the arena.
- A tensor is live from the op that writes it to the last op that reads it. Offsets are
  assigned greedily, largest tensor first, at the lowest offset that does not overlap a tensor
  live at the same time (TFLite Micro's greedy planner does the same).
- Elementwise ops (add, clamp) may write over an input that dies at that op (same offset, same
  size: element i is read before it is written), which saves one buffer per residual block.
- Weights, biases, multipliers and shifts are const arrays in flash.

:func:`check_board` compares the plan with the board's RAM and flash and names the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .network import Network
from .spec import NETWORK_INPUT, Problem

ALIGN = 8
ELEMENTWISE = ("add", "clamp")

#: Board memory (bytes). RAM reserve: kernel thread + RT + ISR stacks (6 KiB) and runtime
#: state; flash reserve: runtime, harness and vectors. Kernel code is estimated per kernel.
#: mps2-an386 (Cortex-M4F) has the AN385's memory; a network too big for lm3s6965evb is
#: sent to mps2-an385 (the first bigger board: same core, same cycle model).
BOARDS: dict[str, dict[str, int]] = {
    "lm3s6965evb": {"flash": 0x3E000, "ram": 64 * 1024},
    "mps2-an385": {"flash": 4 * 1024 * 1024, "ram": 4 * 1024 * 1024},
    "mps2-an386": {"flash": 4 * 1024 * 1024, "ram": 4 * 1024 * 1024},
}
RAM_RESERVE = 6 * 1024 + 1024
FLASH_RESERVE = 12 * 1024
KERNEL_CODE_ESTIMATE = 1536
BIG_BOARD = "mps2-an385"


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class Allocation:
    tensor: str
    offset: int
    size: int
    first: int      # op index that writes it
    last: int       # last op index that reads it


@dataclass
class MemoryPlan:
    arena_bytes: int
    allocations: dict[str, Allocation]
    input_bytes: int
    output_bytes: int
    weight_bytes: int
    peak_live_bytes: int          # lower bound: most bytes live at one op
    naive_bytes: int              # every intermediate in its own buffer
    in_place: list[str] = field(default_factory=list)

    @property
    def ram_bytes(self) -> int:
        """Data RAM of the network: arena + output buffer."""
        return self.arena_bytes + self.output_bytes

    @property
    def flash_data_bytes(self) -> int:
        return self.weight_bytes + self.input_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"arena_bytes": self.arena_bytes, "output_bytes": self.output_bytes,
                "input_bytes": self.input_bytes, "weight_bytes": self.weight_bytes,
                "ram_bytes": self.ram_bytes, "flash_data_bytes": self.flash_data_bytes,
                "peak_live_bytes": self.peak_live_bytes, "naive_bytes": self.naive_bytes,
                "in_place": list(self.in_place),
                "allocations": {k: {"offset": a.offset, "size": a.size, "first": a.first,
                                    "last": a.last} for k, a in self.allocations.items()}}


def plan_memory(net: Network, in_place: bool = True) -> MemoryPlan:
    last_use: dict[str, int] = {}
    for op in net.ops:
        for t in op.inputs:
            last_use[t] = op.index
    final = net.ops[-1].output
    tensors: dict[str, Allocation] = {}
    for op in net.ops:
        if op.output == final:
            continue
        size = _align(net.tensors[op.output].nbytes)
        tensors[op.output] = Allocation(op.output, -1, size, op.index,
                                        last_use.get(op.output, op.index))
    # in-place partners: output of an elementwise op -> an input dying there, same size
    partner: dict[str, str] = {}
    if in_place:
        for op in net.ops:
            if op.type not in ELEMENTWISE or op.output not in tensors:
                continue
            for t in op.inputs:
                if (t in tensors and tensors[t].last == op.index
                        and tensors[t].size == tensors[op.output].size
                        and t not in partner.values()):
                    partner[op.output] = t
                    break

    def overlap_time(a: Allocation, b: Allocation) -> bool:
        return not (a.last < b.first or b.last < a.first)

    order = sorted(tensors.values(), key=lambda a: (-a.size, a.first))
    placed: list[Allocation] = []
    for alloc in order:
        p = partner.get(alloc.tensor)
        if p is not None and tensors[p].offset >= 0:
            cand = tensors[p].offset
            if all(not overlap_time(alloc, o) or o.tensor == p
                   or cand + alloc.size <= o.offset or o.offset + o.size <= cand
                   for o in placed):
                alloc.offset = cand
                placed.append(alloc)
                continue
        conflicts = sorted((o for o in placed if overlap_time(alloc, o)
                            and not (partner.get(alloc.tensor) == o.tensor
                                     or partner.get(o.tensor) == alloc.tensor)),
                           key=lambda o: o.offset)
        offset = 0
        for o in conflicts:
            if offset + alloc.size <= o.offset:
                break
            offset = max(offset, o.offset + o.size)
        alloc.offset = offset
        placed.append(alloc)
    arena = max((a.offset + a.size for a in placed), default=0)
    peak = 0
    for op in net.ops:
        live = sum(a.size for a in tensors.values() if a.first <= op.index <= a.last)
        peak = max(peak, live)
    used_in_place = [k for k, v in partner.items()
                     if tensors[k].offset == tensors[v].offset]
    return MemoryPlan(arena_bytes=arena, allocations=tensors,
                      input_bytes=net.tensors[NETWORK_INPUT].nbytes
                      + sum(a.nbytes for a in net.consts.values()),
                      output_bytes=net.tensors[final].nbytes, weight_bytes=net.weight_bytes,
                      peak_live_bytes=peak, naive_bytes=sum(a.size for a in tensors.values()),
                      in_place=used_in_place)


def check_plan(net: Network, plan: MemoryPlan) -> None:
    """Raise AssertionError if two tensors live at the same time share bytes."""
    allocs = list(plan.allocations.values())
    for i, a in enumerate(allocs):
        for b in allocs[i + 1:]:
            if a.last < b.first or b.last < a.first:
                continue
            if a.offset + a.size <= b.offset or b.offset + b.size <= a.offset:
                continue
            ok = ((a.offset == b.offset and a.size == b.size)
                  and (a.last == b.first or b.last == a.first)
                  and any(op.type in ELEMENTWISE and op.index in (a.last, b.last)
                          for op in net.ops))
            if not ok:
                raise AssertionError(f"memory plan: {a.tensor} and {b.tensor} overlap")


def check_board(net: Network, plan: MemoryPlan, board: str, kernels: int | None = None
                ) -> list[Problem]:
    """Problems (empty = fits) of the network on the board, naming the fix."""
    if board not in BOARDS:
        return [Problem("runner.board", f"{board!r} is not a known board",
                        f"valid: {', '.join(BOARDS)}")]
    mem = BOARDS[board]
    probs: list[Problem] = []
    n_kernels = kernels if kernels is not None else len(net.ops)
    ram_need = plan.ram_bytes + RAM_RESERVE
    flash_need = plan.flash_data_bytes + FLASH_RESERVE + n_kernels * KERNEL_CODE_ESTIMATE
    bigger = [b for b, m in BOARDS.items()
              if b != board and m["ram"] >= ram_need and m["flash"] >= flash_need]
    fix_board = f"set runner.board: {bigger[0]}" if bigger else "use a smaller network"
    if ram_need > mem["ram"]:
        big = max(plan.allocations.values(), key=lambda a: a.size, default=None)
        where = f"; the largest activation is {big.tensor} ({big.size} bytes)" if big else ""
        probs.append(Problem(
            "experiment.model", f"the network needs {ram_need} bytes of RAM (arena "
            f"{plan.arena_bytes} + output {plan.output_bytes} + runtime {RAM_RESERVE}) but "
            f"{board} has {mem['ram']}{where}",
            f"{fix_board}, or use fewer filters / a smaller input"))
    if flash_need > mem["flash"]:
        probs.append(Problem(
            "experiment.model", f"the network needs about {flash_need} bytes of flash "
            f"(weights {plan.weight_bytes} + input {plan.input_bytes} + code) but {board} "
            f"has {mem['flash']}", f"{fix_board}, or use fewer parameters"))
    return probs
