"""A dependency-free progress bar for long sweeps (stderr; one line per update off a TTY)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.done = self.ok = self.failed = self.reused = 0
        self.start = time.monotonic()
        self.tty = self.stream.isatty()
        self._last_line = 0.0

    def update(self, ok: int = 0, failed: int = 0, reused: int = 0) -> None:
        self.ok += ok
        self.failed += failed
        self.reused += reused
        self.done += ok + failed
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and self.done < self.total and now - self._last_line < 2.0:
            return  # logs and CI: at most one line every 2 s
        self._last_line = now
        line = self._render(now)
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()

    def _render(self, now: float) -> str:
        width = 28
        frac = self.done / self.total
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        elapsed = now - self.start
        fresh = self.done - self.reused
        eta = ""
        if 0 < fresh and self.done < self.total:
            eta = f" eta {elapsed / fresh * (self.total - self.done):.0f}s"
        extra = f" reused {self.reused}" if self.reused else ""
        return (f"{self.label} [{bar}] {self.done}/{self.total} runs  ok {self.ok}"
                f"  failed {self.failed}{extra}  {elapsed:.0f}s{eta}  ")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
