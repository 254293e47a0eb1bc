"""Tracking overhead: `slicert run --track` against the untracked run, per run, one process.

Starts private services (SeaweedFS S3 + MLflow on free ports, temporary SLICERT_HOME),
runs the manifest untracked and tracked into separate folders, and prints the wall time
per run of each and their ratio (target <= 1.2x). Then stops the services.

Usage: .venv/bin/python bench/bench_tracking.py [--manifest M] [--repeat R] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "slicert_ops.cli"]


def free_block(n: int) -> int:
    for base in range(21000, 60000, 97):
        ok = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("bench: no free ports")


def run(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    res = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"bench: slicert {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=ROOT / "experiments" / "conv2d_5x5.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="slicert-bench-track-") as tmp:
        base = free_block(12)
        env = {**os.environ, "SLICERT_HOME": str(Path(tmp) / "home"),
               "SLICERT_S3_PORT": str(base), "SLICERT_MLFLOW_PORT": str(base + 11)}
        run(["services", "up"], env)
        try:
            lines = subprocess.run([*CLI, "services", "env"], env=env, capture_output=True,
                                   text=True, check=True).stdout.splitlines()
            for line in lines:
                if line.startswith("export "):
                    key, _, value = line[len("export "):].partition("=")
                    env[key] = value.strip("'\"")
            common = [str(args.manifest), "--jobs", str(args.jobs), "--no-progress",
                      "--set", f"experiment.repeat={args.repeat}"]
            plain = run(["run", *common, "--out", str(Path(tmp) / "plain")], env)
            tracked = run(["run", *common, "--out", str(Path(tmp) / "tracked"), "--track"],
                          env)
            n = sum(1 for _ in (Path(tmp) / "plain").glob("*/run_[0-9]*"))
        finally:
            run(["services", "down"], env)
    print(f"bench: {args.manifest.name}: {n} runs, --jobs {args.jobs}")
    print(f"untracked: {plain:.2f} s ({plain / n * 1000:.0f} ms per run)")
    print(f"tracked (GX validation + MLflow/S3 logging): {tracked:.2f} s "
          f"({tracked / n * 1000:.0f} ms per run)")
    print(f"ratio tracked / untracked per run = {tracked / plain:.3f}  (target <= 1.20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
