"""Simulation parameters: the ``simulation:`` section of ``calib/setups/<setup>.yaml``.

Every physics or detector assumption of the fast simulator lives in that section (with
its source or the mark "assumed"); this module only validates it and converts units.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace

from na64reco.config import Node
from na64reco.errors import ConfigError
from na64reco.geometry import Setup
from na64reco.setup_document import setup_document, setup_sources
from na64reco.sim.punchthrough import SPECIES, PunchThroughModel

#: Processes of the simulator (``--process``); ``mixture`` mixes the beam with the
#: admixtures listed in ``simulation.mixture``.
PROCESS_CHOICES = ("mixture", "beam", "signal", "kdecay", "pidecay", "hadron", "punchthrough",
                   "dimuon", "pileup", "halo", "pedestal")
#: Admixtures a mixture may contain (each a probability per beam particle).
MIXTURE_KEYS = ("halo", "pileup", "hadron", "kdecay", "pidecay", "punchthrough", "dimuon", "signal")


@dataclass(frozen=True)
class SimParams:
    source: str
    spill_particles_max: int
    mixture: dict[str, float]
    # muon energy loss
    beam_energy: float  # MeV (the energy of the losses' reference table)
    radiative_v_min: float
    ecal_lead_g_cm2: float
    hcal_module_energy_loss: float  # MeV
    hcal_module_x0: float
    # dimuons
    dimuon_v_min: float  # spacelike tridents are simulated above it (na64reco.sim.tridents)
    # EM showers
    critical_energy: float  # MeV
    profile_b: float
    core_fraction: float
    core_sigma: float  # Moliere radii
    tail_sigma: float  # Moliere radii
    fluct_log_tmax: tuple[float, float]
    fluct_log_alpha: tuple[float, float]
    fluct_rho: tuple[float, float]
    # hadrons
    hadron_ecal_lambda: float
    hadron_visible_fraction: float
    hadron_profile_shape: float
    hadron_lateral_sigma: float  # mm
    hadron_veto_leak_mips: float
    # APV
    apv_charge_mpv: float
    apv_charge_width: float
    apv_first_sample: float  # ns
    apv_threshold_sigma: float
    # signal
    default_coupling: float
    extra: dict = field(default_factory=dict, compare=False)
    # rare processes and biased sampling (optional sections; docs/backgrounds.md)
    punch: PunchThroughModel | None = None
    leading_rate: float = 0.0  # leading hadrons per muon with v >= leading_v_min (0: no such section)
    leading_v_min: float | None = None  # (None: the setup has no simulation.hadron.leading; see need())
    leading_neutral_fraction: float = 0.0
    bias_v_min: float | None = None  # forced energy-transfer fractions [bias_v_min, v_max] (simulation.biasing)
    bias_ecal_visible_max: float | None = None  # MeV
    # natural single large-angle scattering of the primary muon (na64reco.sim.hard_scatter);
    # q_floor 0: off
    hard_scatter_q_floor: float = 0.0  # MeV: smallest momentum transfer added
    hard_scatter_core_sigmas: float = 4.0  # and at least this many Highland widths (p theta0) of the element

    def need(self, name: str):
        """The value of the optional parameter ``name`` (``leading_v_min``, ``bias_v_min``,
        ``bias_ecal_visible_max``), or a ConfigError naming the setup file's section it comes from."""
        value = getattr(self, name)
        if value is None:
            section = "simulation.hadron.leading" if name.startswith("leading") else "simulation.biasing"
            raise ConfigError(f"{self.source}: key '{section}': missing; the process simulated needs its "
                              f"{name.split('_', 1)[1]}")
        return value

    @property
    def ecal_losses(self):
        """The discrete losses (v > ``radiative_v_min``) of a muon crossing the ECAL's lead
        (:class:`na64reco.sim.interactions.MuonLosses`; imported here: the CLI's options read these
        parameters without the physics stack)."""
        from na64reco.sim.interactions import MuonLosses

        return MuonLosses("lead", self.ecal_lead_g_cm2, self.radiative_v_min, self.beam_energy)


def load_sim_params(setup: Setup, mixture: dict[str, float] | None = None) -> SimParams:
    """Read and validate the ``simulation`` section of ``setup``'s YAML file.

    ``mixture`` overrides individual admixture probabilities (e.g. enhanced fractions
    for a validation sample); unknown keys raise :class:`ConfigError`.
    """
    root = _setup_yaml(setup.source)
    if not root.has("simulation"):
        raise ConfigError(f"{setup.source}: key 'simulation': missing (the simulator needs this "
                          "section: process admixtures and model parameters)")
    s = root.node("simulation")
    mix_node = s.node("mixture")
    mix = {}
    for key in MIXTURE_KEYS:
        mix[key] = mix_node.number(key, 0.0, minimum=0.0, maximum=1.0)
    unknown = set(mix_node.data) - set(MIXTURE_KEYS)
    if unknown:
        raise mix_node.error(sorted(unknown)[0], f"unknown admixture (known: {', '.join(MIXTURE_KEYS)})")
    for key, value in (mixture or {}).items():
        if key not in MIXTURE_KEYS:
            raise ConfigError(f"mixture override {key!r}: unknown admixture (known: {', '.join(MIXTURE_KEYS)})")
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"mixture override {key!r}={value!r}: expected a probability in [0, 1]")
        mix[key] = float(value)
    if sum(mix.values()) > 1.0:
        raise ConfigError(f"{setup.source}: key 'simulation.mixture': admixtures sum to "
                          f"{sum(mix.values()):.3g} > 1")
    m = s.node("muon")
    d = s.node("dimuon")
    sh = s.node("shower")
    h = s.node("hadron")
    a = s.node("apv")
    sg = s.node("signal")
    if sg.has("recoil_pt_scale"):  # (read until stop 41; a setup that sets it expects an effect)
        raise sg.error("recoil_pt_scale", "is no longer read: the signal lepton's recoil comes from the WW emission "
                       "angle (na64reco.physics.darkbrem.sample_pt); remove the key")
    for key in ("rate", "v_max"):  # (read until stop 44; a setup that sets them expects an effect)
        if d.has(key):
            raise d.error(key, "is no longer read: the tridents' rates and spectra come from their cross sections "
                          "(na64reco.physics.tridents); remove the key")
    if m.has("radiative_b_cm2_per_g"):  # (read until stop 43; a setup that sets it expects an effect)
        raise m.error("radiative_b_cm2_per_g", "is no longer read: the muon's discrete losses come from the "
                      "cross sections of na64reco.physics.muon_losses; remove the key")
    params = SimParams(
        source=setup.source,
        beam_energy=setup.beam.energy,
        spill_particles_max=s.integer("spill_particles_max", minimum=1),
        mixture=mix,
        radiative_v_min=m.number("radiative_v_min", minimum=1e-6, maximum=0.5),
        ecal_lead_g_cm2=m.number("ecal_lead_g_cm2", minimum=0.0),
        hcal_module_energy_loss=m.quantity("hcal_module_energy_loss", "energy", minimum=0.0),
        hcal_module_x0=m.number("hcal_module_x0", minimum=0.0),
        dimuon_v_min=d.number("v_min", minimum=0.01, maximum=0.9),
        critical_energy=sh.quantity("critical_energy", "energy", minimum=0.0),
        profile_b=sh.number("profile_b", minimum=0.01),
        core_fraction=sh.number("lateral_core_fraction", minimum=0.0, maximum=1.0),
        core_sigma=sh.number("lateral_core_sigma", minimum=1e-3),
        tail_sigma=sh.number("lateral_tail_sigma", minimum=1e-3),
        fluct_log_tmax=tuple(sh.numbers("fluct_log_tmax", 2)),
        fluct_log_alpha=tuple(sh.numbers("fluct_log_alpha", 2)),
        fluct_rho=tuple(sh.numbers("fluct_rho", 2)),
        hadron_ecal_lambda=h.number("ecal_interaction_lengths", minimum=0.0),
        hadron_visible_fraction=h.number("visible_fraction", minimum=0.0, maximum=1.0),
        hadron_profile_shape=h.number("profile_shape", minimum=1.0),
        hadron_lateral_sigma=h.quantity("lateral_sigma", "length", minimum=0.0),
        hadron_veto_leak_mips=h.number("veto_leak_mips", minimum=0.0),
        apv_charge_mpv=a.number("cluster_charge_mpv", minimum=0.0),
        apv_charge_width=a.number("cluster_charge_width", minimum=0.0),
        apv_first_sample=a.quantity("first_sample_time", "time"),
        apv_threshold_sigma=a.number("threshold_sigma", minimum=0.0),
        default_coupling=sg.number("default_coupling", minimum=0.0),
    )
    return replace(params, **_rare_process_params(setup, s, h))


def _setup_yaml(source: str) -> Node:
    """The setup file, parsed once per process and version of the file (~0.1 s of YAML for
    the NA64mu setup, 5 % of simulating 100k MOT; issue 11).  The nodes are only read."""
    try:
        stats = tuple((st.st_mtime_ns, st.st_size) for st in map(os.stat, setup_sources(source)))
    except OSError:
        return setup_document(source)  # its error names the file
    return _parsed_yaml(str(source), stats)


@functools.lru_cache(maxsize=16)
def _parsed_yaml(source: str, stats: tuple) -> Node:
    """(``stats``: the (mtime, size) of the file and its bases, the key of the cache)"""
    return setup_document(source)


def _rare_process_params(setup: Setup, s, h) -> dict:
    """The optional punch-through, leading-hadron and biasing entries."""
    out: dict = {}
    if h.has("punchthrough"):
        pt = h.node("punchthrough")
        ratio_node = pt.node("lambda_ratio")
        ratios = {k: ratio_node.number(k, minimum=0.01) for k in ratio_node.data}
        unknown = set(ratios) - set(SPECIES)
        if unknown:
            raise ratio_node.error(sorted(unknown)[0], f"unknown species (known: {', '.join(SPECIES)})")
        hcal = setup.calorimeters.get("HCAL")
        if hcal is None:
            raise pt.error("lambda_ratio", "punch-through needs an HCAL in the setup")
        out["punch"] = PunchThroughModel(
            module_lambda=hcal.number("interaction_lengths_per_module"),
            lambda_ratio=ratios, visible_fraction=h.number("visible_fraction", minimum=0.0, maximum=1.0),
            cut_charged=pt.quantity("cut_charged", "energy", minimum=0.0),
            cut_neutral=pt.quantity("cut_neutral", "energy", minimum=0.0))
    if h.has("leading"):
        ld = h.node("leading")
        out["leading_rate"] = ld.number("rate", minimum=0.0, maximum=1.0)
        out["leading_v_min"] = ld.number("v_min", minimum=1e-4, maximum=1.0)
        out["leading_neutral_fraction"] = ld.number("neutral_fraction", minimum=0.0, maximum=1.0)
    if s.has("biasing"):
        b = s.node("biasing")
        out["bias_v_min"] = b.number("v_min", minimum=1e-4, maximum=1.0)
        out["bias_ecal_visible_max"] = b.quantity("ecal_visible_max", "energy", minimum=0.0)
    m = s.node("muon")
    if m.has("single_scatter"):
        ss = m.node("single_scatter")
        out["hard_scatter_q_floor"] = ss.quantity("q_floor", "energy", minimum=0.0)
        out["hard_scatter_core_sigmas"] = ss.number("core_sigmas", minimum=2.0)
    return out


__all__ = ["SimParams", "load_sim_params", "PROCESS_CHOICES", "MIXTURE_KEYS"]
