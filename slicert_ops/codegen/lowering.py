"""The plain-C lowering of a scheduled kernel: TVM's s_tir pipeline with our two passes, and
the C text post-processing. Shared by every kernel (``network/kernels.py``, the one
generator) and by meta_schedule's builder.

How (all TVM-native except the file preamble):

- ``tvm.tirx.build(mod, target=c, pipeline=PIPELINE)``: :data:`PIPELINE` is registered with
  ``register_tir_pipeline``. It is TVM's default s_tir pipeline without the GPU passes,
  ``AnnotateEntryFunc``, ``SplitHostDevice``, ``MakePackedAPI`` (and the FP8/BF16 storage
  legalizers, which need its output), with vectorisation off, plus two passes of ours:
  ``SlicertInsertYieldChecks`` (after ``LowerOpaqueBlock``: appends
  ``call_extern("int32", "slicert_yield_check")``, value ignored, at the end of the body of
  the loop annotated :data:`YIELD_ANNOTATION` by the schedule) and ``SlicertUnpackedParams``
  (last: buffer parameters become typed pointers, ``void f(int8_t* data, ...)``).
- The C host code generator always writes a TVM preamble (TVM runtime includes,
  ``TVM_DLL``, a ``__tvm_ffi__library_ctx`` variable); it has no option to leave it out, so
  :func:`to_plain_c` replaces that preamble with ours and drops ``TVM_DLL``. Anything else
  TVM-specific left in the text (``TVMBackendAllocWorkspace``, DLTensor, ``TVMFFI``...) is an
  error, raised loudly.
"""

from __future__ import annotations

import re
from typing import Any

import tvm
from tvm import s_tir, tirx

#: The schedule marks the micro-tile loop with this; the lowering appends the yield check.
YIELD_ANNOTATION = "slicert.yield_check"
PIPELINE = "slicert_unpacked_c"
YIELD_FUNC = "slicert_yield_check"
YIELD_HEADER = "slicert/yield.h"
# The runtime's header (zephyr/include/slicert/yield.h) defines
# ``static inline int32_t slicert_yield_check(void)``; TVM declares the extern as
# ``int32_t slicert_yield_check();`` after the include, which C99 accepts (6.2.2p4).
YIELD_RET_DTYPE = "int32"
TARGET: dict[str, Any] = {"kind": "c"}
PASS_CONFIG: dict[str, Any] = {}
OPT_LEVEL = 3
DL_CPU = 1  # DLDeviceType kDLCPU
C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------------------------
# Our two passes
# --------------------------------------------------------------------------------------------
def _map_stmt(stmt: tirx.Stmt, fn) -> tirx.Stmt:
    """Post-order structural map over the statement kinds left after ``LowerOpaqueBlock``.

    ``fn(stmt)`` is applied to each For after its body was mapped. Statements without a body
    are returned as they are; an unknown statement with a body is an error (better than
    silently skipping a loop).
    """
    if isinstance(stmt, tirx.For):
        body = _map_stmt(stmt.body, fn)
        if not body.same_as(stmt.body):
            stmt = tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body,
                            stmt.thread_binding, stmt.annotations, stmt.step, stmt.span)
        return fn(stmt)
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_map_stmt(s, fn) for s in stmt.seq]
        if all(a.same_as(b) for a, b in zip(seq, stmt.seq, strict=True)):
            return stmt
        return tirx.SeqStmt(seq, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then_case = _map_stmt(stmt.then_case, fn)
        else_case = _map_stmt(stmt.else_case, fn) if stmt.else_case is not None else None
        if then_case.same_as(stmt.then_case) and (
                else_case is None or else_case.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then_case, else_case, stmt.span)
    if isinstance(stmt, tirx.AttrStmt):
        body = _map_stmt(stmt.body, fn)
        if body.same_as(stmt.body):
            return stmt
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body, stmt.span)
    if isinstance(stmt, tirx.While):
        raise NotImplementedError("while loops are not expected in a tiled kernel")
    if hasattr(stmt, "body"):
        raise TypeError(f"_map_stmt: unhandled statement with a body: {type(stmt).__name__}")
    return stmt


@tirx.transform.prim_func_pass(opt_level=0, name="SlicertInsertYieldChecks")
def insert_yield_checks(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    """Append ``slicert_yield_check()`` to the body of every loop annotated with
    :data:`YIELD_ANNOTATION` (and drop the annotation)."""
    found = []

    def visit(loop: tirx.For) -> tirx.Stmt:
        if YIELD_ANNOTATION not in loop.annotations:
            return loop
        found.append(loop.loop_var.name)
        call = tirx.Evaluate(tirx.call_extern(YIELD_RET_DTYPE, YIELD_FUNC))
        annotations = {k: v for k, v in loop.annotations.items() if k != YIELD_ANNOTATION}
        return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind,
                        tirx.SeqStmt([loop.body, call]), loop.thread_binding, annotations,
                        loop.step, loop.span)

    body = _map_stmt(func.body, visit)
    if len(found) != 1:
        raise RuntimeError(f"expected exactly one loop annotated {YIELD_ANNOTATION!r} "
                           f"(the micro-tile loop), found {found}")
    return func.with_body(body)


@tirx.transform.prim_func_pass(opt_level=0, name="SlicertUnpackedParams")
def unpacked_params(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    """Buffer parameters -> typed pointer parameters (the "unpacked" calling convention):
    each buffer is re-declared over its pointer (``DeclBuffer(buf, data=ptr)``)."""
    ptrs, decls = [], []
    for buf in func.params:
        if not tirx.buffer.is_buffer_var(buf):
            ptrs.append(buf)
            continue
        ptr = tirx.Var(buf.name, tvm.ir.PointerType(tvm.ir.PrimType(buf.dtype)))
        ptrs.append(ptr)
        decls.append(tirx.DeclBuffer(buf, data=ptr))
    # CPU device attributes (as MakePackedAPI sets them): LowerTVMBuiltin needs them to turn
    # small allocations (the accumulators) into stack arrays.
    body = tirx.AttrStmt(tvm.ir.StringImm("default"), "device_id", tirx.const(0, "int32"),
                         func.body)
    body = tirx.AttrStmt(tvm.ir.StringImm("default"), "device_type",
                         tirx.const(DL_CPU, "int32"), body)
    return tirx.PrimFunc(ptrs, tirx.SeqStmt([*decls, body]), func.ret_type, func.attrs)


def _lowering_passes(config) -> list[tvm.transform.Pass]:
    passes = [
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.StmtSimplify(),
        s_tir.transform.AnnotateIrregularLoop(),
        s_tir.transform.LowerOpaqueBlock(),
        insert_yield_checks,
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),
        s_tir.transform.LoopPartition(),
        tirx.transform.VectorizeLoop(False),
    ]
    if not bool(config.get("tirx.disable_storage_rewrite", False)):
        passes.append(tirx.transform.StorageRewrite())
    passes += [
        s_tir.transform.HoistIfThenElse(),
        tirx.transform.UnrollLoop(),
        s_tir.transform.RenormalizeSplitPattern(),
        tirx.transform.StmtSimplify(),
        tirx.transform.RemoveNoOp(),
        s_tir.transform.RewriteUnsafeSelect(),
    ]
    if not bool(config.get("tirx.disable_cse_tir", False)):
        passes.append(tirx.transform.CommonSubexprElim())
    passes += [tirx.transform.VerifyMemory(), unpacked_params]
    return passes


def _pipeline_factory():
    @tvm.transform.module_pass(opt_level=0, name="SlicertUnpackedC")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        config = tvm.transform.PassContext.current().config
        return tvm.ir.transform.Sequential(_lowering_passes(config))(mod)

    def finalize_host():
        return tvm.ir.transform.Sequential([tirx.transform.LowerTVMBuiltin(),
                                            tirx.transform.LowerIntrin()])

    def finalize_device():
        return tvm.ir.transform.Sequential([])

    return _pipeline, finalize_host, finalize_device


tirx.compilation_pipeline.register_tir_pipeline(PIPELINE, _pipeline_factory)


def lowering_options() -> dict[str, Any]:
    """What the lowering did, for ``tvm_config`` (JSON-able)."""
    names = [getattr(p, "info", None) and p.info.name or str(p)
             for p in _lowering_passes(PASS_CONFIG)]
    return {"target": TARGET, "pipeline": PIPELINE, "passes": names,
            "finalize_host": ["LowerTVMBuiltin", "LowerIntrin"], "pass_config": PASS_CONFIG,
            "opt_level": OPT_LEVEL,
            "calling_convention": "unpacked: void entry(T* data, T* weight, T* out)",
            "post_processing": "TVM C preamble (runtime includes, TVM_DLL, library ctx) "
                               "replaced by <stdint.h>, <stdbool.h>, \"" + YIELD_HEADER + "\"",
            "yield_check": {"function": YIELD_FUNC, "header": YIELD_HEADER,
                            "declaration": f"int32_t {YIELD_FUNC}();",
                            "placement": "end of the micro-tile loop body"}}


# --------------------------------------------------------------------------------------------
# C text
# --------------------------------------------------------------------------------------------
_PREAMBLE_DROP = (
    re.compile(r"^// tvm target: .*$"),
    re.compile(r"^#define TVM_EXPORTS$"),
    re.compile(r'^#include "tvm/[^"]+"$'),
    re.compile(r"^#include <math\.h>$"),
    re.compile(r"^#include <stdbool\.h>$"),
    re.compile(r"^void\* __tvm_ffi__library_ctx = NULL;$"),
)
_FORBIDDEN = ("TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace", "DLTensor", "TVMFFI",
              "TVMValue", "TVM_DLL", "__tvm", "tvm/", "malloc", "math.h")


def to_plain_c(src: str, header_comment: str) -> str:
    lines = src.splitlines()
    # The preamble is everything before the first declaration ("#ifdef __cplusplus").
    try:
        first = lines.index("#ifdef __cplusplus")
    except ValueError:
        raise RuntimeError("unexpected TVM C output: no '#ifdef __cplusplus' block") from None
    for line in lines[:first]:
        if line.strip() and not any(p.match(line) for p in _PREAMBLE_DROP):
            raise RuntimeError(f"unexpected line in the TVM C preamble: {line!r}")
    body = [re.sub(r"^TVM_DLL ", "", line) for line in lines[first:]]
    text = "\n".join(body).rstrip() + "\n"
    for bad in _FORBIDDEN:
        if bad in text:
            raise RuntimeError(f"generated C still contains {bad!r}: the kernel must not need "
                               "the TVM runtime (workspace allocation, packed API)")
    head = [header_comment, "#include <stdint.h>", "#include <stdbool.h>",
            f'#include "{YIELD_HEADER}"', ""]
    return "\n".join(head) + "\n" + text


def build_c(func: tirx.PrimFunc, entry: str) -> str:
    """TVM's C text of a scheduled PrimFunc under :data:`PIPELINE`, entry ``entry`` (before
    :func:`to_plain_c`)."""
    mod = tvm.IRModule({entry: func.with_attr("global_symbol", entry)})
    with tvm.transform.PassContext(opt_level=OPT_LEVEL, config=PASS_CONFIG):
        rt_mod = tirx.build(mod, target=tvm.target.Target(TARGET), pipeline=PIPELINE)
    return rt_mod.inspect_source()
