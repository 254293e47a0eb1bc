"""Run folders: atomic writes, completeness, and reuse by candidate id."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError

RUN_SCHEMA = "slicert-run/1"
RUN_FILES = ("manifest.json", "tvm_config.json", "zephyr_build.log", "qemu_trace.json",
             "cycles.txt")


def run_name(number: int) -> str:
    return f"run_{number:04d}"


def run_number(candidate_index: int, repeat: int, repeats: int) -> int:
    """Runs are numbered in expansion order: candidate-major, repeat-minor, from 1."""
    return candidate_index * repeats + repeat + 1


def write_text_atomic(path: Path, text: str) -> None:
    """Replace one file whole (temp file + rename): a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def key_path(path: Path) -> Path:
    """Where the content key of a derived file (a plot, a timeline) is kept: beside it."""
    return path.with_name(f".{path.name}.key")


def key_is_current(path: Path, key: str, *others: Path) -> bool:
    """True when ``path`` (and ``others``, written with it) exist and the key beside ``path``
    is ``key``; else the stale key is removed, so none stays beside a half-written file."""
    kp = key_path(path)
    try:
        if all(p.is_file() for p in (path, *others)) and kp.read_text() == key:
            return True
    except OSError:
        pass
    kp.unlink(missing_ok=True)
    return False


def write_key(path: Path, key: str) -> None:
    """Record ``key`` beside ``path`` once the file(s) are written whole."""
    write_text_atomic(key_path(path), key)


def dumps(data: Any) -> str:
    """Stable JSON: sorted keys, fixed separators, trailing newline (byte-identical reruns)."""
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True) + "\n"


_EVENT_KEYS = ({"cycles", "insns", "payload", "type"},
               {"cycles", "insns", "payload", "pend_cycles", "type"})


def _event_json(e: dict[str, Any]) -> str:
    """``json.dumps(e, sort_keys=True)`` of a trace event, 5x faster for the usual shape
    (int stamps, an identifier type); anything else goes through json."""
    keys = e.keys()
    if (keys == _EVENT_KEYS[0] or keys == _EVENT_KEYS[1]) and isinstance(e["type"], str) \
            and e["type"].isidentifier() and e["type"].isascii():
        pend = f', "pend_cycles": {int(e["pend_cycles"])}' if "pend_cycles" in e else ""
        return (f'{{"cycles": {int(e["cycles"])}, "insns": {int(e["insns"])}, '
                f'"payload": {int(e["payload"])}{pend}, "type": "{e["type"]}"}}')
    return json.dumps(e, sort_keys=True, ensure_ascii=True)


# dumps_trace writes every key but "events" first (sorted), then the events, one per line:
# the index and the metrics of reused runs need only the head, so reading stops there (a
# trace holds thousands of events; parsing them all was most of the index's cost).
_EVENTS_MARK = b',\n"events": ['


def read_trace_head(path: Path) -> dict[str, Any]:
    """A trace's keys except ``events`` (schema, metrics, exit code ...), read from its head;
    falls back to parsing the whole file when it is laid out differently."""
    with open(path, "rb") as f:
        buf = b""
        while len(buf) < 1 << 20:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            i = buf.find(_EVENTS_MARK)
            if i >= 0:
                try:
                    head = json.loads(buf[:i] + b"\n}")
                except ValueError:
                    break
                if isinstance(head, dict):
                    return head
                break
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path),
                         fix="the run folder is damaged: re-run the candidate") from exc


def trace_metrics(run_dir: Path) -> dict[str, Any]:
    """The metrics of a published run (``{}`` when its trace is missing or damaged)."""
    try:
        return read_trace_head(Path(run_dir) / "qemu_trace.json").get("metrics") or {}
    except (OSError, ValueError, InputError):
        return {}


def dumps_trace(trace: dict[str, Any]) -> str:
    """Like dumps, but one event per line: readable, diffable, and fast (C encoder per event;
    json's indent mode falls back to the pure-Python encoder, 10x slower on long traces)."""
    head = dumps({k: v for k, v in trace.items() if k != "events"}).rstrip()
    evs = trace.get("events", [])
    lines = getattr(evs, "json_lines", None)  # sim.trace.TraceEvents: all events at once
    events = lines() if callable(lines) else ",\n".join(_event_json(e) for e in evs)
    body = f'"events": [\n{events}\n]' if events else '"events": []'
    return head[:-1].rstrip() + (",\n" if len(head) > 2 else "") + body + "\n}\n"


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def finished_run(run_dir: Path, candidate_id: str, repeat: int) -> dict[str, Any] | None:
    """The manifest of a complete, successful run of this candidate+repeat, else None."""
    man = read_manifest(run_dir)
    if not man or man.get("candidate_id") != candidate_id or man.get("repeat") != repeat:
        return None
    if man.get("status") != "ok":
        return None
    if not all((run_dir / f).is_file() for f in RUN_FILES):
        return None
    return man


class RunWriter:
    """Writes one run folder under a temporary name and publishes it by rename.

    A folder named run_NNNN therefore always holds a complete run; an interrupted write
    leaves only a run_NNNN.tmp-* folder, which the next run of the sweep removes.
    """

    def __init__(self, exp_dir: Path, number: int) -> None:
        self.final = exp_dir / run_name(number)
        self.tmp = exp_dir / f"{run_name(number)}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    def write_text(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, dumps(data))

    def add_raw(self, src: Path, name: str, compress: bool) -> None:
        """Keep a raw log beside the run (gzip with a fixed mtime: deterministic bytes)."""
        raw = self.tmp / "raw"
        raw.mkdir(exist_ok=True)
        if compress:
            with open(src, "rb") as fin, open(raw / f"{name}.gz", "wb") as fout, \
                    gzip.GzipFile(filename=name, mode="wb", fileobj=fout, mtime=0,
                                  compresslevel=1) as gz:
                shutil.copyfileobj(fin, gz)
        else:
            shutil.copyfile(src, raw / name)

    def publish(self, manifest: dict[str, Any]) -> Path:
        """Write manifest.json last, then swap the folder into place."""
        self.write_json("manifest.json", manifest)
        if self.final.exists():
            supersede(self.final)
        os.replace(self.tmp, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def supersede(run_dir: Path) -> None:
    """Move an older run folder aside instead of deleting it: nothing is lost."""
    man = read_manifest(run_dir) or {}
    if man.get("status") != "ok":
        shutil.rmtree(run_dir, ignore_errors=True)  # a failed run holds no measurement
        return
    attic = run_dir.parent / ".superseded"
    attic.mkdir(exist_ok=True)
    tag = man.get("candidate_id", "unknown")
    target = attic / f"{run_dir.name}-{tag}-{int(time.time())}"
    os.replace(run_dir, target)


def clean_stale_tmp(exp_dir: Path, numbers: Iterable[int] | None = None) -> None:
    """Remove interrupted run_NNNN.tmp-* folders: all of them, or only those of ``numbers``.

    Batch tasks of one sweep run in parallel into the same folder: each one cleans only its
    own run numbers, never the folders another batch is writing right now.
    """
    keep_to = None if numbers is None else {run_name(n) for n in numbers}
    for p in exp_dir.glob("run_*.tmp-*"):
        if keep_to is None or p.name.partition(".tmp-")[0] in keep_to:
            shutil.rmtree(p, ignore_errors=True)
