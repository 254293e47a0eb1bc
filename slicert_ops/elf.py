"""Reading an ELF32 little-endian file's symbol table (no binutils subprocess)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from slicert_ops.errors import StageError


def elf_symbols(elf: str | os.PathLike[str], stage: str = "run") -> dict[str, int]:
    """Symbol name -> address (thumb bit as stored) from an ELF32 little-endian file.

    Pure Python (a few ms: ``arm-none-eabi-nm`` takes ~20 ms, loading its plugins), for
    looking up exception handler addresses, e.g. ``[syms["SysTick_Handler"],
    syms["PendSV_Handler"]]``. A bad file is a StageError of ``stage``.
    """
    path = os.fspath(elf)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StageError(stage, f"{path}: cannot read ELF: {exc}") from None
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise StageError(stage, f"{path}: not a 32-bit little-endian ELF file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
    sections = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize)
                for i in range(shnum)]
    out: dict[str, int] = {}
    for sec in sections:
        if sec[1] != 2:          # SHT_SYMTAB
            continue
        strtab = sections[sec[6]]
        str_off = strtab[4]
        for off in range(sec[4], sec[4] + sec[5], 16):
            st_name, st_value = struct.unpack_from("<II", data, off)
            if st_name:
                end = data.index(b"\0", str_off + st_name)
                out[data[str_off + st_name:end].decode("utf-8", "replace")] = st_value
    return out
