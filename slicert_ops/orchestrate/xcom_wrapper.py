"""`python -m slicert_ops.orchestrate.xcom_wrapper ARGV...`: run `slicert ARGV...` in a pod.

KubernetesPodOperator(do_xcom_push=True) reads the task result from
/airflow/xcom/return.json (its sidecar). This runs the stage in-process, echoes its output and
writes the last JSON object line of its stdout there (``{}`` when it printed none). The exit
status is the stage's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

XCOM_FILE = os.environ.get("SLICERT_XCOM_FILE", "/airflow/xcom/return.json")


class _Tee(io.TextIOBase):
    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self._buf = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._buf += text
        *done, self._buf = self._buf.split("\n")
        self.lines += done
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def last_json(lines: list[str]) -> dict:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return {}


def main(argv: list[str] | None = None) -> int:
    from slicert_ops.cli import main as slicert_main

    tee = _Tee(sys.stdout)
    rc = 1
    try:
        with contextlib.redirect_stdout(tee):
            rc = slicert_main(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        if tee._buf:
            tee.lines.append(tee._buf)
        os.makedirs(os.path.dirname(XCOM_FILE), exist_ok=True)
        with open(XCOM_FILE, "w") as fh:
            json.dump(last_json(tee.lines), fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
