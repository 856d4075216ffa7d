"""CPU-time timers around named steps of a run, for the benchmarks that print where a run's
time goes (``bench_many_files.py --steps``, ``bench_chain_ab.py --steps``).

    with cpu_step_timers([(module_or_class, "function_name", "label"), ...]) as spent:
        run()          # spent[label] = CPU seconds inside that function (summed over calls)

The functions are replaced by timed wrappers for the duration of the ``with`` and put back
after it.  A step called inside another timed step counts in both.
"""

from __future__ import annotations

import collections
import functools
import time
from contextlib import contextmanager


@contextmanager
def cpu_step_timers(patches):
    spent: dict[str, float] = collections.defaultdict(float)

    def timed(fn, label):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.process_time() - c
        return wrapper

    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, label in patches:
        setattr(obj, name, timed(getattr(obj, name), label))
    try:
        yield spent
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
