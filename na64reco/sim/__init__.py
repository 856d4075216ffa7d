"""Fast NA64 simulation: beam, transport, physics, detector response, raw files.

Entry point: :func:`simulate` (also ``na64reco simulate``).  Modules: ``params`` (the
``simulation:`` section of the setup YAML), ``beam``, ``tracks`` (particles as arrays,
multiple scattering), ``interactions`` (energy loss, showers, decays), ``signal`` (dark
bremsstrahlung), ``transport`` (element-by-element stepping), ``trigger``, ``digitize``
(MSADC, APV, straws), ``generate`` (spills, chunked writing).
"""

from na64reco.sim.generate import SimulationResult, simulate
from na64reco.sim.params import PROCESS_CHOICES

__all__ = ["simulate", "SimulationResult", "PROCESS_CHOICES"]
