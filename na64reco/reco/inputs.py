"""Checks that the events, the setup and the conditions handed to a reconstruction belong together."""

from __future__ import annotations

from na64reco.errors import ConfigError
from na64reco.geometry import check_period
from na64reco.io.raw import numpy_field


def check_belong(events, setup, conditions, source: str, caller: str) -> None:
    """A :class:`ConfigError` naming ``caller`` for conditions of another setup, or a setup loaded for
    another run period than the events' runs (:func:`~na64reco.geometry.check_period`; events without
    a ``run`` field, made by hand, are not checked): a setup loaded without a run reconstructs a 2022
    run with neither the period's planes nor its tracking rules, without any other sign."""
    if conditions.setup != setup.name:
        raise ConfigError(f"{caller}: conditions of setup {conditions.setup!r} (tag {conditions.tag!r}) given with "
                          f"setup {setup.name!r}")
    if len(events) and "run" in events.fields:
        runs = numpy_field(events, "run")
        lo, hi = int(runs.min()), int(runs.max())
        for run in (lo, hi) if lo != hi else (lo,):  # (periods are run ranges: the ends tell)
            check_period(setup, run, f"{caller}: the events of {source or 'the input'}")
