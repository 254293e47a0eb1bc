"""The `slicert` command. Each area registers its own subcommands (register(subparsers))."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from slicert_ops import hosttime  # noqa: F401 - first: its clock starts the set-up
from slicert_ops.errors import SliceRTError

# Modules that expose `register(subparsers)`; each adds its own subcommands.
COMMAND_MODULES = [
    "slicert_ops.commands_run",
    "slicert_ops.commands_model",
    "slicert_ops.commands_services",
    "slicert_ops.commands_airflow",
    "slicert_ops.commands_cycles",
    "slicert_ops.commands_timeline",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slicert",
        description="SliceRT-Farm: deterministic Cortex-M cycle traces for tiled ML kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from slicert_ops.tracking.http_settings import configure_mlflow_http

    configure_mlflow_http()  # before any command imports mlflow: no telemetry, short retries
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SliceRTError as exc:
        print(f"slicert: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slicert: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `slicert check ... | head`: the reader left, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
