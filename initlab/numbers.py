"""Numbers as files and tables want them."""
from __future__ import annotations

import math


def finite_or_none(x):
    """``x`` as a float when it is finite, else None (strict JSON has no NaN or Infinity)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
