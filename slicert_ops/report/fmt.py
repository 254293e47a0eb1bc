"""How the report tables print a value: the precision of `slicert run`'s end-of-run summary
(whole numbers, cycles included, with thousands separators; ratios below 100 with three
significant digits: 0.105 and 0.052 stay apart)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def number(v: float) -> str:
    """Whole with separators from 100 up (cycles, bytes), else three significant digits."""
    v = float(v)
    if v.is_integer() or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def cell(v: Any) -> str:
    """One table cell: blank for missing, yes/no for booleans, number() for numbers."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return number(v)
    return str(v)


def text_table(df: pd.DataFrame) -> str:
    """A plain-text table (the end-of-run summary) with every cell as cell() prints it."""
    if df.empty:
        return "(none)"
    return df.map(cell).to_string(index=False)
