"""Code generation: real TVM, real gcc / arm-none-eabi-gcc, no mocks.

Each generated kernel is compiled for the Cortex-M3 (object only) and for the host, where a
small generated C driver feeds it ``make_inputs``, runs it, and dumps the output and the
number of yield checks (counted by tests/support/host_yield/slicert/yield.h).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slicert_ops.codegen import (
    KernelSource,
    OperatorSpec,
    ScheduleParams,
    check_schedule,
    default_micro_tile,
    feature_names,
    features,
    footprint,
    make_inputs,
    reference,
    tile_counts,
)

ROOT = Path(__file__).resolve().parents[1]
STUB_INCLUDE = ROOT / "tests" / "support" / "host_yield"
RUNTIME_YIELD_H = ROOT / "zephyr" / "include" / "slicert" / "yield.h"
ARM_GCC = shutil.which("arm-none-eabi-gcc")
HOST_GCC = shutil.which("gcc")
ARM_FLAGS = ["-mcpu=cortex-m3", "-mthumb", "-O2", "-std=c99", "-Wall", "-Werror",
             "-ffreestanding", "-c"]
HOST_FLAGS = ["-O1", "-std=c99", "-Wall", "-Werror"]

DEFAULT_CONV = OperatorSpec("conv2d", "int8", (1, 36, 36, 3), (5, 5), 8)
DENSE = OperatorSpec("dense", "int8", (1, 256), units=64)

# (id, operator, schedule): conv2d with padding, stride 2, tiles that do not divide the output,
# batch > 1, float32; dense int8 / float32.
CASES = [
    ("conv_default_t8_m4_u2", DEFAULT_CONV, ScheduleParams(8, 4, 2, slice=64)),
    ("conv_default_t16_mdef_u4", DEFAULT_CONV, ScheduleParams(16, None, 4)),
    ("conv_default_t32_m8_u8", DEFAULT_CONV, ScheduleParams(32, 8, 8)),
    ("conv_pad2_s2_t3_nondiv", OperatorSpec("conv2d", "int8", (1, 15, 13, 3), (5, 5), 4,
                                            stride=2, padding=2), ScheduleParams(3, 1, 2)),
    ("conv_pad1_batch2_t6_m3", OperatorSpec("conv2d", "int8", (2, 11, 9, 2), (3, 3), 6,
                                            padding=1), ScheduleParams(6, 3, 3)),
    ("conv_f32_pad1_s2_t4_m2", OperatorSpec("conv2d", "float32", (1, 17, 15, 3), (3, 3), 6,
                                            stride=2, padding=1), ScheduleParams(4, 2, 3)),
    ("dense_t16_m4_u4", DENSE, ScheduleParams(16, 4, 4)),
    ("dense_t32_m8_u1", DENSE, ScheduleParams(32, 8, 1)),
    ("dense_f32_batch2_t4_nondiv", OperatorSpec("dense", "float32", (2, 50), units=10),
     ScheduleParams(4, 2, 5)),
    # the blocked forms of the one generator (network/blocked.py): register blocks, packed
    # weights, reduction unrolling; partial tiles and blocks, padding, stride, batch, float32
    ("conv_block_t8_m4_u4_px2", DEFAULT_CONV, ScheduleParams(8, 4, 4, form=1, pixel_block=2)),
    ("conv_block_t16_m4_u8_px2_ru3", DEFAULT_CONV,
     ScheduleParams(16, 4, 8, form=1, pixel_block=2, reduction_unroll=3)),
    ("conv_im2col_pad2_s2_t3_nondiv", OperatorSpec("conv2d", "int8", (1, 15, 13, 3), (5, 5), 4,
                                                   stride=2, padding=2),
     ScheduleParams(3, 3, 2, form=2, pixel_block=3)),
    ("conv_block_pad1_batch2_t6_m3", OperatorSpec("conv2d", "int8", (2, 11, 9, 2), (3, 3), 6,
                                                  padding=1),
     ScheduleParams(6, 3, 3, form=1, pixel_block=3)),
    ("conv_im2col_f32_pad1_s2", OperatorSpec("conv2d", "float32", (1, 17, 15, 3), (3, 3), 6,
                                             stride=2, padding=1),
     ScheduleParams(4, 2, 3, form=2, pixel_block=2)),
    ("conv_pointwise_nondiv", OperatorSpec("conv2d", "int8", (1, 5, 7, 16), (1, 1), 8),
     ScheduleParams(4, 2, 4, form=3, pixel_block=4, reduction_unroll=8)),
    ("dense_block_t16_m8_u4", DENSE, ScheduleParams(16, 8, 4, form=1, reduction_unroll=8)),
    ("dense_block_f32_batch2_nondiv", OperatorSpec("dense", "float32", (2, 50), units=10),
     ScheduleParams(4, 2, 2, form=1)),
    # the simd form (four MACs per slicert_nn_dot4; here its plain-C path): a 75-byte patch
    # (19 groups, the last padded), the 1x1 GEMM, dense
    ("conv_simd_pad2_s2_t3_nondiv", OperatorSpec("conv2d", "int8", (1, 15, 13, 3), (5, 5), 4,
                                                 stride=2, padding=2),
     ScheduleParams(3, 3, 2, form=4, pixel_block=3)),
    ("conv_simd_pointwise_nondiv", OperatorSpec("conv2d", "int8", (1, 5, 7, 16), (1, 1), 8),
     ScheduleParams(4, 2, 4, form=4, pixel_block=4, reduction_unroll=2)),
    ("dense_simd_t16_m8_u4", DENSE, ScheduleParams(16, 8, 4, form=4, reduction_unroll=8)),
]


@pytest.fixture(scope="module")
def gen():
    """generate_kernel, memoised per (operator, schedule) for the module."""
    from slicert_ops.codegen import generate_kernel

    cache: dict = {}

    def _gen(op: OperatorSpec, sched: ScheduleParams) -> KernelSource:
        key = (op, sched)
        if key not in cache:
            cache[key] = generate_kernel(op, sched)
        return cache[key]

    return _gen


def _driver(ks: KernelSource) -> str:
    (dn, dt, ds), (wn, wt, ws), (on, ot, os_) = ks.args
    return f"""#include <stdint.h>
#include <stdio.h>
#include <string.h>
unsigned long slicert_yield_count = 0;
{ks.prototype}
static {dt} {dn}_buf[{math.prod(ds)}];
static {wt} {wn}_buf[{math.prod(ws)}];
static {ot} {on}_buf[{math.prod(os_)}];
static int load(const char* path, void* buf, size_t n) {{
  FILE* f = fopen(path, "rb");
  if (!f) return 1;
  size_t got = fread(buf, 1, n, f);
  fclose(f);
  return got != n;
}}
int main(int argc, char** argv) {{
  if (argc != 4) return 2;
  if (load(argv[1], {dn}_buf, sizeof {dn}_buf)) return 3;
  if (load(argv[2], {wn}_buf, sizeof {wn}_buf)) return 4;
  memset({on}_buf, 0x5A, sizeof {on}_buf); /* every element must be written */
  {ks.entry}({dn}_buf, {wn}_buf, {on}_buf);
  FILE* f = fopen(argv[3], "wb");
  if (!f || fwrite({on}_buf, 1, sizeof {on}_buf, f) != sizeof {on}_buf) return 5;
  fclose(f);
  printf("%lu\\n", slicert_yield_count);
  return 0;
}}
"""


def _run_on_host(ks: KernelSource, op: OperatorSpec, tmp: Path, seed: int = 0):
    (tmp / "kernel.c").write_text(ks.c_source)
    (tmp / "driver.c").write_text(_driver(ks))
    exe = tmp / "kernel_test"
    subprocess.run([HOST_GCC, *HOST_FLAGS, f"-I{STUB_INCLUDE}", str(tmp / "kernel.c"),
                    str(tmp / "driver.c"), "-o", str(exe)], check=True, capture_output=True,
                   text=True)
    inputs = make_inputs(op, seed)
    for name, arr in zip(("data.bin", "weight.bin"), ks.kernel_inputs(inputs), strict=True):
        (tmp / name).write_bytes(np.ascontiguousarray(arr).tobytes())
    res = subprocess.run([str(exe), str(tmp / "data.bin"), str(tmp / "weight.bin"),
                          str(tmp / "out.bin")], check=True, capture_output=True, text=True)
    out = np.frombuffer((tmp / "out.bin").read_bytes(),
                        dtype=np.dtype(op.output_dtype)).reshape(op.output_shape)
    return inputs, out, int(res.stdout.strip())


# ---------------------------------------------------------------------------------------------
# Pure checks (no TVM)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sched, field, needle", [
    (ScheduleParams(40, 4, 2), "tile_size", "valid range 1..32"),
    (ScheduleParams(0, None, 2), "tile_size", "positive"),
    (ScheduleParams(8, 16, 2), "micro_tile", "larger than tile_size 8"),
    (ScheduleParams(8, 3, 2), "micro_tile", "does not divide tile_size 8"),
    (ScheduleParams(8, -1, 2), "micro_tile", "positive"),
    (ScheduleParams(8, 4, 16), "unroll", "larger than the loop it unrolls (out_channels = 8)"),
    (ScheduleParams(8, 4, 3), "unroll", "does not divide"),
    (ScheduleParams(8, 4, 0), "unroll", "positive"),
    (ScheduleParams(8, 4, 2, slice=0), "slice", "positive"),
])
def test_check_schedule_rejects_conv(sched, field, needle):
    errs = check_schedule(DEFAULT_CONV, sched)
    assert len(errs) == 1, errs
    assert errs[0].startswith(field + ":") and needle in errs[0], errs


def test_check_schedule_dense_and_operator():
    assert check_schedule(DENSE, ScheduleParams(16, 4, 4)) == []
    errs = check_schedule(DENSE, ScheduleParams(128, None, 3))
    assert [e.split(":")[0] for e in errs] == ["tile_size", "unroll"], errs
    assert "input features (reduction) = 256" in errs[1]
    bad = OperatorSpec("conv2d", "int16", (1, 4, 4), (5, 5), 0)
    fields = [e.split(":")[0] for e in check_schedule(bad, ScheduleParams(1))]
    assert fields == ["dtype", "input"], fields
    big_kernel = OperatorSpec("conv2d", "int8", (1, 4, 4, 1), (7, 7), 2, padding=1)
    assert check_schedule(big_kernel, ScheduleParams(1))[0].startswith("kernel:")
    assert check_schedule(DEFAULT_CONV, ScheduleParams(8)) == []


def test_check_schedule_accumulator_limit_and_workspace_guard():
    wide = OperatorSpec("conv2d", "int8", (1, 6, 6, 1), (3, 3), 256)
    errs = check_schedule(wide, ScheduleParams(4, 2, 256))
    assert len(errs) == 1 and errs[0].startswith("unroll:") and "1024 bytes" in errs[0]
    assert check_schedule(wide, ScheduleParams(4, 2, 128)) == []
    from slicert_ops.codegen.lowering import to_plain_c

    tvm_like = ('#include "tvm/runtime/c_backend_api.h"\n#ifdef __cplusplus\nextern "C"\n'
                "#endif\nTVM_DLL void k(int32_t* out) {\n  int32_t* w = (int32_t*)"
                "TVMBackendAllocWorkspace(1, 0, 2048, 0, 32);\n}\n")
    with pytest.raises(RuntimeError, match="TVMBackendAllocWorkspace"):
        to_plain_c(tvm_like, "/* test */")


def test_importing_codegen_does_not_import_tvm():
    code = "import sys, slicert_ops.codegen as c; c.check_schedule; print('tvm' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    assert res.stdout.strip() == "False"


def test_default_micro_tile_and_counts():
    assert [default_micro_tile(DEFAULT_CONV, t) for t in (1, 2, 5, 6, 8, 10, 16, 32)] == \
        [1, 2, 1, 3, 4, 2, 4, 4]
    assert default_micro_tile(DENSE, 16) == 4 and default_micro_tile(DENSE, 2) == 2
    c = tile_counts(DEFAULT_CONV, ScheduleParams(8, 4, 2))
    assert (c["macro_tiles"], c["micro_tiles"]) == (16, 64)
    odd = OperatorSpec("conv2d", "int8", (1, 13, 13, 1), (5, 5), 2)  # 9x9 output
    c = tile_counts(odd, ScheduleParams(8, 2, 1))
    assert (c["macro_tiles"], c["micro_tiles"], c["nonempty_micro_tiles"]) == (4, 64, 25)


def test_spec_values_and_footprint():
    op = OperatorSpec.from_dict(DEFAULT_CONV.to_dict())
    assert op == DEFAULT_CONV and hash(op) == hash(DEFAULT_CONV)
    assert op.output_shape == (1, 32, 32, 8) and op.output_dtype == "int32"
    assert op.input_shapes == ((1, 36, 36, 3), (5, 5, 3, 8))
    assert op.macs == 32 * 32 * 8 * 75
    assert footprint(op) == {"flash_data_bytes": 36 * 36 * 3 + 600, "ram_data_bytes": 32768}
    assert DENSE.input_shapes == ((1, 256), (256, 64)) and DENSE.output_shape == (1, 64)
    assert ScheduleParams(8, 4, 2, 64).to_dict() == {"tile_size": 8, "micro_tile": 4,
                                                     "unroll": 2, "slice": 64}


def test_features_flat_and_same_keys():
    names = feature_names()
    for op, sched in ((DEFAULT_CONV, ScheduleParams(8, 4, 2)), (DENSE, ScheduleParams(16))):
        f = features(op, sched)
        assert list(f) == names
        assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in f.values())
        assert f["yield_checks"] == f["micro_tiles"] == tile_counts(op, sched)["micro_tiles"]
    f = features(DEFAULT_CONV, ScheduleParams(8, 4, 2))
    assert (f["op_conv2d"], f["op_dense"], f["dtype_float32"]) == (1, 0, 0)
    assert f["macs_per_micro_tile"] == 16 * 8 * 75 and f["macs"] == DEFAULT_CONV.macs


def test_reference_is_deterministic():
    a = make_inputs(DEFAULT_CONV, seed=3)
    b = make_inputs(DEFAULT_CONV, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].dtype == np.int8 and a[0].min() >= -8 and a[0].max() <= 7
    assert not np.array_equal(a[0], make_inputs(DEFAULT_CONV, seed=4)[0])
    ref = reference(DEFAULT_CONV, a)
    assert ref.dtype == np.int32 and ref.shape == (1, 32, 32, 8)
    # spot-check one output element by the definition
    d, w = (x.astype(np.int64) for x in a)
    assert ref[0, 3, 5, 2] == int((d[0, 3:8, 5:10, :] * w[:, :, :, 2]).sum())


# ---------------------------------------------------------------------------------------------
# Real TVM + gcc
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_reference(case, gen, tmp_path):
    if not HOST_GCC:
        pytest.fail("host gcc not installed")
    _, op, sched = case
    ks = gen(op, sched)
    # TVM's extern declaration and one call site
    assert "\nint32_t slicert_yield_check();\n" in ks.c_source
    assert ks.c_source.count("slicert_yield_check();") == 2
    inputs, out, yields = _run_on_host(ks, op, tmp_path)
    expected = reference(op, inputs)
    if op.dtype == "int8":
        assert np.array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert yields == ks.micro_tiles == tile_counts(op, sched)["micro_tiles"]


@pytest.mark.integration
def test_kernels_compile_for_cortex_m3(gen, tmp_path):
    for name, op, sched in CASES:
        src = tmp_path / f"{name}.c"
        src.write_text(gen(op, sched).c_source)
        res = subprocess.run([ARM_GCC, *ARM_FLAGS, f"-I{STUB_INCLUDE}", str(src), "-o",
                              str(tmp_path / f"{name}.o")], capture_output=True, text=True)
        assert res.returncode == 0, f"{name}:\n{res.stderr}"


@pytest.mark.integration
def test_kernel_compiles_against_the_runtime_header(gen, tmp_path):
    """The contract with zephyr/include/slicert/yield.h: TVM's extern declaration of
    slicert_yield_check must agree with the runtime's definition."""
    src = tmp_path / "kernel.c"
    src.write_text(gen(DEFAULT_CONV, ScheduleParams(8, 4, 2)).c_source)
    res = subprocess.run([ARM_GCC, *ARM_FLAGS, f"-I{RUNTIME_YIELD_H.parents[1]}", str(src),
                          "-o", str(tmp_path / "kernel.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.integration
def test_plain_c_interface(gen):
    ks = gen(DEFAULT_CONV, ScheduleParams(8, 4, 2))
    assert ks.entry == "slicert_kernel"
    assert ks.prototype == "void slicert_kernel(int8_t* data, int8_t* weight, int32_t* out);"
    assert "void slicert_kernel(int8_t* data, int8_t* weight, int32_t* out) {" in ks.c_source
    assert [a[:2] for a in ks.args] == [("data", "int8_t"), ("weight", "int8_t"),
                                        ("out", "int32_t")]
    includes = [ln for ln in ks.c_source.splitlines() if ln.startswith("#include")]
    assert includes == ["#include <stdint.h>", "#include <stdbool.h>",
                        '#include "slicert/yield.h"']
    for bad in ("TVM", "tvm/", "DLTensor", "Workspace", "malloc"):
        assert bad not in ks.c_source.split("*/", 1)[1]
    dense = gen(DENSE, ScheduleParams(16, 4, 4))
    assert dense.prototype == "void slicert_kernel(int8_t* data, int8_t* weight, int32_t* out);"
    from slicert_ops.codegen import generate_kernel

    f32 = generate_kernel(CASES[5][1], CASES[5][2], entry="conv_f32")
    assert "void conv_f32(float* data, float* weight, float* out) {" in f32.c_source
    with pytest.raises(ValueError, match="unroll"):
        generate_kernel(DEFAULT_CONV, ScheduleParams(8, 4, 3))
    with pytest.raises(ValueError, match="entry"):
        generate_kernel(DEFAULT_CONV, ScheduleParams(8, 4, 2), entry="not an identifier")


@pytest.mark.integration
def test_unroll_changes_the_code(gen):
    def mac_lines(ks: KernelSource) -> int:
        return sum(1 for ln in ks.c_source.splitlines() if "* ((int32_t)weight[" in ln)

    conv = [gen(DEFAULT_CONV, ScheduleParams(8, 4, u)) for u in (1, 2, 4, 8)]
    assert [mac_lines(k) for k in conv] == [1, 2, 4, 8]
    assert len({k.c_source for k in conv}) == 4
    dense = [gen(DENSE, ScheduleParams(16, 4, u)) for u in (1, 4)]
    assert [mac_lines(k) for k in dense] == [1, 4]


@pytest.mark.integration
def test_tvm_config_is_json_and_complete(gen):
    ks = gen(DEFAULT_CONV, ScheduleParams(8, 4, 2, slice=64))
    cfg = json.loads(json.dumps(ks.tvm_config))
    assert cfg["tvm_version"].startswith("0.27")
    assert "sch.split" in cfg["schedule_trace"] and "slicert.yield_check" in cfg["schedule_trace"]
    assert cfg["schedule_trace_json"][0][0][0] == "GetSBlock"
    assert "SlicertInsertYieldChecks" in cfg["lowering"]["passes"]
    assert "MakePackedAPI" not in " ".join(cfg["lowering"]["passes"])
    assert "T.prim_func" in cfg["tir_script"]
    assert cfg["features"] == features(DEFAULT_CONV, ScheduleParams(8, 4, 2, slice=64))
    assert cfg["schedule"] == {"tile_size": 8, "micro_tile": 4, "unroll": 2, "slice": 64}
    assert (cfg["micro_tiles"], cfg["macro_tiles"]) == (64, 16)


_SUBPROCESS_GEN = """
import hashlib, json
from slicert_ops.codegen import OperatorSpec, ScheduleParams, generate_kernel
ks = generate_kernel(OperatorSpec("conv2d", "int8", (1, 36, 36, 3), (5, 5), 8),
                     ScheduleParams(8, 4, 2))
print(hashlib.sha256(ks.c_source.encode()).hexdigest(),
      hashlib.sha256(json.dumps(ks.tvm_config, sort_keys=True).encode()).hexdigest())
"""


@pytest.mark.integration
def test_deterministic_output():
    from slicert_ops.codegen import generate_kernel

    a = generate_kernel(DEFAULT_CONV, ScheduleParams(8, 4, 2))
    generate_kernel(DENSE, ScheduleParams(16, 4, 4))  # other work in between
    b = generate_kernel(DEFAULT_CONV, ScheduleParams(8, 4, 2))
    assert a.c_source == b.c_source
    assert json.dumps(a.tvm_config, sort_keys=True) == json.dumps(b.tvm_config, sort_keys=True)
    # and in a fresh process
    res = subprocess.run([sys.executable, "-c", _SUBPROCESS_GEN], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    c_hash, cfg_hash = res.stdout.split()
    assert c_hash == hashlib.sha256(a.c_source.encode()).hexdigest()
    assert cfg_hash == hashlib.sha256(
        json.dumps(a.tvm_config, sort_keys=True).encode()).hexdigest()
