"""`slicert timeline RUN_DIR [-o FILE]`: a run's events as a Chrome trace (Perfetto,
chrome://tracing) and a self-contained zoomable HTML page next to it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("timeline", help="a run's events as a timeline (Perfetto JSON + HTML)",
                       description="Write the run folder's qemu_trace.json events as a Chrome "
                       "trace-event JSON (open it in ui.perfetto.dev or chrome://tracing) and "
                       "a self-contained zoomable HTML timeline beside it. One track per "
                       "context (kernel thread, PendSV, timer ISR, RT task, SysTick); times in "
                       "µs of the modelled clock, cycles in each event's args.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run folder, results/<experiment>/run_NNNN")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="the JSON file (default RUN_DIR/timeline.json); the HTML is FILE "
                        "with .html")
    p.set_defaults(func=cmd_timeline)


def cmd_timeline(args: argparse.Namespace) -> int:
    from slicert_ops.report.timeline import write_timeline

    json_path, html_path = write_timeline(args.run_dir, args.output)
    print(f"timeline: {json_path}\n          {html_path}")
    return 0
