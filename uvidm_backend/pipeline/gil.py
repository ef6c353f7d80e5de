"""Quick GIL hand-offs while a GPU thread shares the process with busy threads.

A thread that gives up the GIL (each torch call does, around its kernel launch) waits, to get it back from a
thread running Python or a long C call that holds it (pickling a head for a writer process, a compiler), up to
the interpreter's switch interval: 5 ms by default. A batch's GPU thread makes hundreds of such calls, so
beside busy threads it waited seconds. Measured on the 2-core machine: 2,000 small torch ops took 7 ms alone,
13.8 s beside a thread pickling heads, and 0.75 s with a 0.5 ms interval.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The switch interval while a GPU thread works beside other busy threads.
QUICK_SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_holders = 0
_saved = 0.0


@contextmanager
def quick_gil_handoffs(interval: float = QUICK_SWITCH_INTERVAL_S) -> Iterator[None]:
    """Shortens the process's switch interval (never lengthens it) until the last of the nested or
    concurrent blocks ends, then restores the interval found by the first."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = sys.getswitchinterval()
        _holders += 1
        sys.setswitchinterval(min(sys.getswitchinterval(), interval))
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_saved)
