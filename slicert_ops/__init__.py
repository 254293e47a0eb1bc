"""SliceRT-Farm: deterministic Cortex-M real-time ML kernel measurement farm."""

__version__ = "0.1.0"
