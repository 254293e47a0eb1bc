"""Firmware build stage: kernel + SliceRT runtime + harness -> Cortex-M3 ELF.

    from slicert_ops.firmware import RuntimeOptions, build_firmware
    result = build_firmware(kernel, inputs, RuntimeOptions(slice_us=200), "out/")
"""

from slicert_ops.firmware.build import (
    HANDLER_SYMBOLS,
    ZEPHYR_DIR,
    BuildResult,
    build_firmware,
    ctype_dtype,
    gcc_version,
)
from slicert_ops.firmware.options import DEFAULT_CPU_MHZ, RuntimeOptions

__all__ = [
    "DEFAULT_CPU_MHZ", "HANDLER_SYMBOLS", "ZEPHYR_DIR", "BuildResult", "RuntimeOptions",
    "build_firmware", "ctype_dtype", "gcc_version",
]
