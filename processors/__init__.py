"""Coffea processors of the NA64 analyses (glue over the ``na64reco`` library).

``get_processor(name)`` returns the processor class of an analysis by name.
"""

from __future__ import annotations

import importlib

from na64reco.errors import ConfigError

PROCESSORS = ("na64mu_invisible", "na64e_invisible")


def get_processor(name: str):
    """The processor class called ``name`` (one of :data:`PROCESSORS`)."""
    if name not in PROCESSORS:
        raise ConfigError(f"unknown processor {name!r}; available: {', '.join(PROCESSORS)}")
    return importlib.import_module(f"processors.{name}").Processor
