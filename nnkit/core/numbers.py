"""Numbers that are not numbers: the limits beyond which a size or count is refused, and JSON without NaN.

A size, channel count, kernel, stride or repeat above MAX_SIZE (2**31 - 1: larger than any dimension of a real
network, and the largest a 32-bit index, as cuDNN and most CUDA kernels use, can address) is a typo or an
attack, never a network; refusing it up front keeps every answer fast and every error one line, where Python
would otherwise convert thousands of digits, multiply astronomically large integers or run for minutes.
"""

from __future__ import annotations

import math
import os
from typing import Any

MAX_SIZE = 2**31 - 1
MAX_DIGITS = len(str(MAX_SIZE))  # longer digit strings are refused before int() reads them (Python's int
# parsing is quadratic in the number of digits and refuses more than 4300)
MAX_ELEMENTS = 2**63 - 1  # torch's int64 numel: a tensor larger than this cannot exist anywhere
# A model's input (torch traces it, even on the meta device, in int64 byte counts): 2**48 elements is a petabyte
# of float32, no real input, and leaves every activation a network derives from it (channels times area,
# 256 times the input at most in real networks) inside int64 bytes.
MAX_INPUT_ELEMENTS = 2**48


def too_large(text: str) -> bool:
    """True for a digit string whose number exceeds MAX_SIZE, decided without converting long strings."""
    digits = text.lstrip("+-").lstrip("0")
    return len(digits) > MAX_DIGITS or (bool(digits) and int(digits) > MAX_SIZE)


def physical_memory() -> int | None:
    """Bytes of RAM (POSIX sysconf), None where the platform does not say: what a real allocation cannot
    exceed."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def finite_json(doc: Any) -> Any:
    """`doc` with every NaN or infinite float replaced by None: JSON has no NaN or Infinity (RFC 8259), and a
    script's json parser would refuse Python's extension."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: finite_json(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [finite_json(v) for v in doc]
    return doc
