"""Fixed costs per sweep (issue #17 item 4): index, report, validation; cold vs warm.

    python bench/bench_fixed_costs.py [--candidates-grid spec|wide] [--warm 5]

On a synthetic 540-run sweep (tests/support/synthetic_runs.py: the pipeline's run folder
layout, with verdicts; ``spec``: 18 candidates x 30 repeats as conv2d_5x5.yaml, ``wide``:
180 x 3), in one process:

- index: ``build_index`` + ``write_index`` without the row cache (a full rebuild: what every
  sweep paid before), the first build with it (writes the cache), and warm (median of
  ``--warm``): nothing changed, and one run changed;
- report: ``write_report`` into a fresh folder (every PNG drawn, matplotlib imported) vs
  again on the same data (every PNG kept), and after one run changed;
- validation: a short sweep's validation stage (1 run handed over, then closed) with the
  per-sweep validation process (before: GX imported each time), the first one starting the
  validation server, and the next ones (steady state: the server is warm); plus per run in a
  batch of 16. A private $TMPDIR and a 5 s idle timeout: the server exits after the bench.

Prints each figure and the ratios cold / warm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def make_sweep(root: Path, grid: str) -> Path:
    from tests.support.synthetic_runs import write_sweep

    if grid == "spec":
        dirs = write_sweep(root, "conv2d_5x5", tile_sizes=(4, 8, 16), micro_tiles=(1, 2),
                           unrolls=(1, 2, 4), slices=(48,), repeat=30,
                           validation=lambda c, r: True)
    else:
        dirs = write_sweep(root, "conv2d_5x5", tile_sizes=(4, 8, 16, 32), micro_tiles=(1, 2, 4),
                           unrolls=(1, 2, 4, 8, 16), slices=(32, 64, 128), repeat=3,
                           validation=lambda c, r: True)
    assert len(dirs) == 540, len(dirs)
    return root / "conv2d_5x5"


def touch_one_run(exp: Path, n: int) -> None:
    """A re-measured run: its trace's kernel cycles change (a row and most plots change)."""
    path = exp / "run_0007" / "qemu_trace.json"
    trace = json.loads(path.read_text())
    trace["metrics"]["kernel_cycles"] += 1000 + n
    path.write_text(json.dumps(trace))


def bench_index_report(exp: Path, warm_n: int) -> dict[str, float]:
    from slicert_ops.report.index import ROW_CACHE, build_index, write_index
    from slicert_ops.report.report import write_report

    name = exp.name
    out: dict[str, float] = {}

    def index(cache: bool):
        df = build_index(exp.parent, experiment=name, cache=cache)
        write_index(exp, exp / "index.parquet", df=df)
        return df

    (exp / ROW_CACHE).unlink(missing_ok=True)
    out["index_full"], df = timed(index, False)
    full_bytes = (exp / "index.parquet").read_bytes()
    out["index_first"], _ = timed(index, True)
    warm = [timed(index, True)[0] for _ in range(warm_n)]
    out["index_warm"] = statistics.median(warm)
    assert (exp / "index.parquet").read_bytes() == full_bytes, "warm index differs"

    report = exp / "report"
    shutil.rmtree(report, ignore_errors=True)
    had_mpl = "matplotlib" in sys.modules
    out["report_cold"], _ = timed(write_report, df, report, name)
    out["report_cold_imports_matplotlib"] = float(not had_mpl and "matplotlib" in sys.modules)
    out["report_warm"] = statistics.median(
        timed(write_report, df, report, name)[0] for _ in range(warm_n))

    # one run changed: its row is re-read, the plots showing it re-drawn
    touch_one_run(exp, 0)
    out["index_one_changed"], df2 = timed(index, True)
    out["report_one_changed"], _ = timed(write_report, df2, report, name)
    return out


def bench_validation(exp: Path, tmp: Path) -> dict[str, float]:
    from slicert_ops.validate import server
    from slicert_ops.validate.stage import ValidationStage

    runs = sorted(p for p in exp.glob("run_*") if p.is_dir())

    def short_sweep(dirs: list[Path]) -> float:
        for d in dirs:
            (d / "validation.json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        stage = ValidationStage(batch_size=16, max_wait_s=1.0)
        stage.warm()
        for d in dirs:
            stage(SimpleNamespace(reused=False), d)
        verdicts = stage.close()
        assert len(verdicts) == len(dirs)
        return time.perf_counter() - t0

    out: dict[str, float] = {}
    os.environ[server.SERVER_ENV] = "0"
    out["val_process_1run"] = statistics.median(short_sweep(runs[:1]) for _ in range(2))
    del os.environ[server.SERVER_ENV]
    out["val_server_first_1run"] = short_sweep(runs[1:2])
    out["val_server_steady_1run"] = statistics.median(
        short_sweep(runs[2 + i:3 + i]) for i in range(3))
    out["val_server_steady_16runs_per_run"] = short_sweep(runs[10:26]) / 16
    out["val_server_pid_alive"] = float(server.socket_path().exists())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates-grid", choices=("spec", "wide"), default="spec")
    ap.add_argument("--warm", type=int, default=5, help="warm repetitions (median)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slicert-fixed-", dir="/tmp"))
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    os.environ.setdefault("SLICERT_VALIDATION_IDLE_S", "5")
    try:
        t0 = time.perf_counter()
        exp = make_sweep(tmp / "results", args.candidates_grid)
        print(f"synthetic sweep: 540 runs ({args.candidates_grid} grid) in "
              f"{time.perf_counter() - t0:.1f} s -> {exp}")
        r = bench_index_report(exp, args.warm)
        v = bench_validation(exp, tmp)
    finally:
        path = None
        try:
            from slicert_ops.validate import server

            path = server.socket_path()
        except Exception:  # noqa: BLE001
            pass
        deadline = time.monotonic() + 15
        while path is not None and path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the server's idle exit
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else "-"

    before = r["index_full"] + r["report_cold"]
    after = r["index_warm"] + r["report_warm"]
    print(f"index (540 runs): full rebuild {r['index_full']:.3f} s, first with cache "
          f"{r['index_first']:.3f} s, warm {r['index_warm']:.3f} s "
          f"({ratio(r['index_full'], r['index_warm'])}), one run changed "
          f"{r['index_one_changed']:.3f} s")
    print(f"report: cold {r['report_cold']:.3f} s (matplotlib imported: "
          f"{bool(r['report_cold_imports_matplotlib'])}), warm {r['report_warm']:.3f} s "
          f"({ratio(r['report_cold'], r['report_warm'])}), one run changed "
          f"{r['report_one_changed']:.3f} s")
    print(f"index + report: cold {before:.3f} s, warm {after:.3f} s ({ratio(before, after)})")
    print(f"validation, a short sweep (1 run): per-sweep process {v['val_process_1run']:.2f} s"
          f", server first {v['val_server_first_1run']:.2f} s, server steady "
          f"{v['val_server_steady_1run']:.2f} s "
          f"({ratio(v['val_process_1run'], v['val_server_steady_1run'])} vs the per-sweep "
          f"process, {ratio(v['val_server_first_1run'], v['val_server_steady_1run'])} first "
          f"vs steady); per run in a batch of 16: "
          f"{v['val_server_steady_16runs_per_run'] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
