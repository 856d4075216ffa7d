"""Fast NA64 simulation: beam, transport, physics, detector response, raw files.

Entry point: :func:`simulate` (also ``na64reco simulate``).  Modules: ``params`` (the
``simulation:`` section of the setup YAML), ``beam``, ``tracks`` (particles as arrays,
multiple scattering), ``interactions`` (energy loss, showers, decays), ``signal`` (dark
bremsstrahlung), ``transport`` (element-by-element stepping), ``trigger``, ``digitize``
(MSADC, APV, straws), ``generate`` (spills, chunked writing).

The package's names are loaded when first used, so that importing a light submodule
(``na64reco.sim.params`` for the command-line options) does not compile the simulation.
"""

import importlib

_NAMES = {"simulate": "generate", "SimulationResult": "generate", "PROCESS_CHOICES": "params"}

__all__ = ["simulate", "SimulationResult", "PROCESS_CHOICES"]


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"na64reco.sim.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'na64reco.sim' has no attribute {name!r}")
