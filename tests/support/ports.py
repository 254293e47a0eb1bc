"""Free TCP ports on 127.0.0.1 for test services, below the kernel's ephemeral range: a
port picked there can be taken by any outgoing connection between the check and the
service's bind (a CI run once lost SeaweedFS's filer port that way)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST = 20000


def ephemeral_low() -> int:
    """The first port the kernel hands out to outgoing connections (32768 if unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int = 1, tries: int = 200) -> int:
    """First port of n consecutive free ports, all below the ephemeral range."""
    hi = max(ephemeral_low(), LOWEST + 1000)
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    for _ in range(tries):
        base = rng.randrange(LOWEST, hi - n)
        if all(is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no block of {n} free ports found in {LOWEST}..{hi}")
