"""Run a generated layer kernel on the host (gcc + ctypes): a fast functional check.

The kernel's C is compiled unchanged with the host's ``gcc`` against the real runtime headers
(``zephyr/include``: on a non-ARM host the trace calls compile to nothing) and the real
``slicert/network.h`` requantisation helper. A stub sets ``slicert_pending`` so that every
yield check takes the slow path, which counts the checks: the count must equal the kernel's
``micro_tiles``. The firmware (QEMU) path remains the reference for timing; this one is for
testing many shapes quickly.
"""

from __future__ import annotations

import ctypes
import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .kernels import LayerKernel

ZEPHYR_INCLUDE = Path(__file__).resolve().parents[2] / "zephyr" / "include"
STUB = r"""
#include <stdint.h>
volatile uint32_t slicert_pending = 1u;
uint32_t slicert_host_yields = 0u;
uint32_t slicert_yield_slow(void) { slicert_host_yields++; return 0u; }
"""
_LIBS: dict[str, ctypes.CDLL] = {}
NP = {"int8_t": np.int8, "int32_t": np.int32, "float": np.float32}


def _compile(src: str) -> ctypes.CDLL:
    key = hashlib.sha256(src.encode()).hexdigest()[:16]
    if key in _LIBS:
        return _LIBS[key]
    d = Path(tempfile.mkdtemp(prefix=f"slicert-host-{key}-"))
    (d / "k.c").write_text(src)
    (d / "stub.c").write_text(STUB)
    so = d / "k.so"
    cmd = ["gcc", "-O1", "-std=gnu11", "-shared", "-fPIC", "-fwrapv", "-Wall", "-Werror",
           f"-I{ZEPHYR_INCLUDE}", "k.c", "stub.c", "-o", str(so)]
    proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"host gcc failed: {proc.stderr.strip()[:2000]}")
    lib = ctypes.CDLL(str(so))
    _LIBS[key] = lib
    return lib


def run_kernel_host(kernel: LayerKernel, buffers: dict[str, np.ndarray],
                    scalars: dict[str, Any], out_shape: tuple[int, ...], out_dtype: Any
                    ) -> tuple[np.ndarray, int]:
    """Call the kernel with numpy buffers (by parameter name) and scalar values; returns
    (output, number of yield checks)."""
    lib = _compile(kernel.c_source)
    fn = getattr(lib, kernel.entry)
    count = ctypes.c_uint32.in_dll(lib, "slicert_host_yields")
    count.value = 0
    out = np.zeros(out_shape, dtype=out_dtype)
    keep, args, types = [], [], []
    for name, ctype in kernel.params:
        if ctype.endswith("*"):
            arr = out if name == "out" else np.ascontiguousarray(
                buffers[name], dtype=NP[ctype[:-1]])
            keep.append(arr)
            args.append(arr.ctypes.data_as(ctypes.c_void_p))
            types.append(ctypes.c_void_p)
        elif ctype == "float":
            args.append(ctypes.c_float(float(scalars[name])))
            types.append(ctypes.c_float)
        else:
            args.append(ctypes.c_int32(int(scalars[name])))
            types.append(ctypes.c_int32)
    fn.argtypes = types
    fn.restype = None
    fn(*args)
    return out, int(count.value)


def run_op_host(net: Any, op: Any, kernel: LayerKernel, inputs: list[np.ndarray]
                ) -> tuple[np.ndarray, int]:
    """One op of a network through its kernel on the host."""
    from .network import act_bounds_f

    bufs: dict[str, np.ndarray] = {}
    names = [n for n, c in kernel.params if c.endswith("*") and n != "out"]
    data_names = [n for n in names if n in ("data", "a", "b")]
    for n, x in zip(data_names, inputs, strict=True):
        bufs[n] = x
    bufs.update(kernel.pack(op.type, op.arrays, op.scalars))
    scalars = dict(op.scalars)
    if net.dtype == "float32":
        scalars["act_min"], scalars["act_max"] = act_bounds_f(op.activation)
    dt = np.int8 if net.dtype == "int8" else np.float32
    return run_kernel_host(kernel, bufs, scalars, tuple(op.layer.out_shape), dt)
