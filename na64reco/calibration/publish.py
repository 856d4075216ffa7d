"""Run a calibration over raw files and publish the result as a new conditions version + tag."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from hepunits import GeV

from na64reco.calibration.alignment import align, alignment_content
from na64reco.calibration.beam_tracks import read_beam_runs
from na64reco.calibration.blinded_inputs import calibration_events
from na64reco.calibration.electron import (
    SectionSums,
    check_response_point,
    electron_params,
    fit_response_point,
    response_table,
)
from na64reco.calibration.inputs import check_electron_beam, check_runs, file_beam_energy
from na64reco.calibration.mip import MIN_FIT_ENTRIES, AmplitudeCollector, mip_gains
from na64reco.calibration.momentum_scale import measure_scales, scale_content
from na64reco.calibration.momentum_scale import summary as scale_summary
from na64reco.calibration.pedestals import PedestalSums, pedestal_constants
from na64reco.calibration.plane_efficiency import efficiency_content, measure_planes
from na64reco.calibration.timing import DEFAULT_MIN_ENTRIES as TIMING_MIN_ENTRIES
from na64reco.calibration.timing import TimeCollector, time_offsets
from na64reco.conditions import CALO_FIELDS, RunConditions, check_one_base, default_tag, load_conditions, publish
from na64reco.errors import NA64Error
from na64reco.geometry import Setup
from na64reco.io.distinct import check_distinct
from na64reco.io.location import display_name
from na64reco.io.raw import open_raw

CALO_KINDS = ("pedestals", "mip", "timing", "electron")
TRACKER_KINDS = ("alignment", "momentum-scale", "efficiency")
KINDS = CALO_KINDS + TRACKER_KINDS
#: the conditions payloads a kind reconstructs with one base over its --runs range (check_one_base): the
#: one it publishes, and the calorimeter for the momentum scale (the upstream losses it subtracts)
_BASE_PAYLOADS = {**dict.fromkeys(CALO_KINDS, ("calorimeter",)), "alignment": ("tracker",),
                  "momentum-scale": ("tracker", "calorimeter"), "efficiency": ("tracker",)}
#: conditions field -> CaloConditions attribute
_ATTR = {"pedestal_even": "pedestal_even", "pedestal_odd": "pedestal_odd", "noise_adc": "noise_adc",
         "gain_mev_per_adc": "gain", "time_offset_ns": "time_offset", "status": "status"}


@dataclass
class CalibrationResult:
    kind: str
    n_events: int
    content: dict  # the ``calorimeter`` payload body: {"detectors": {...}}
    calibrated: dict[str, list[int]] = field(default_factory=dict)  # detector -> channels
    skipped: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # detector -> (channel, reason)
    derived: dict = field(default_factory=dict)  # the raw derived arrays per detector
    payload: str = "calorimeter"  # the conditions payload ``content`` is the body of
    report: str = ""  # the summary of the tracker kinds
    withheld: int = 0  # physics-trigger events of data inside the protected region, not used

    @property
    def n_calibrated(self) -> int:
        return sum(len(v) for v in self.calibrated.values())

    def summary(self) -> str:
        text = self._summary()
        if self.withheld:
            text += (f"\n{self.withheld} physics-trigger events of data not used: inside the protected region "
                     "(blind until the unblinding; na64reco.calibration.blinded_inputs)")
        return text

    def _summary(self) -> str:
        if self.report:
            return self.report
        if self.kind == "electron":
            return self._electron_summary()
        lines = [f"{self.kind}: {self.n_events} events, {self.n_calibrated} channels calibrated"]
        for name, chans in self.calibrated.items():
            skipped = self.skipped.get(name, [])
            lines.append(f"  {name}: {len(chans)} calibrated, {len(skipped)} left at the base values"
                         + (self._shift_summary(name) if self.kind == "timing" and chans else ""))
        for name, items in self.skipped.items():
            for ch, why in items:
                lines.append(f"    {name} channel {ch}: {why}")
        return "\n".join(lines)


    def _shift_summary(self, name: str) -> str:
        """The timing kind's change of detector ``name``: its largest offset shift and the median one."""
        d = self.derived[name]
        ok = np.flatnonzero(np.isfinite(d["shift"]))
        k = ok[np.argmax(np.abs(d["shift"][ok]))]
        return (f"; offsets moved by at most {d['shift'][k]:+.2f} +- {d['error'][k]:.2f} ns (channel {k}), "
                f"median |move| {np.median(np.abs(d['shift'][ok])):.2f} ns")

    def _electron_summary(self) -> str:
        d = self.derived["ECAL"]
        lines = [f"electron: {self.n_events} events, ECAL response at {len(d['points'])} beam energies"]
        for p in d["points"]:
            sc = ", ".join(f"{v:.4f} +- {e:.4f}" for v, e in zip(p.scale, p.scale_error, strict=True))
            lines.append(f"  {p.beam_energy:g} GeV: uncorrected peak {p.raw_peak:.3f} GeV "
                         f"({p.raw_peak / p.beam_energy:.4f}), section scales [{sc}], "
                         f"sigma/E {p.resolution:.4f}, {p.n_core}/{p.n_events} events in the core")
        for _, why in self.skipped.get("ECAL", []):
            lines.append(f"  {why}")
        return "\n".join(lines)


def _base_body(setup: Setup, base: RunConditions) -> dict:
    dets = {}
    for name in setup.calorimeters:
        c = base.calo[name]
        dets[name] = {f: np.asarray(getattr(c, _ATTR[f]), dtype=float).copy() for f in CALO_FIELDS}
        if len(c.response_energy):  # carried over from the base tag
            dets[name]["response_energy_gev"] = np.asarray(c.response_energy) / GeV
            dets[name]["response_scale"] = np.asarray(c.response_scale)
    return dets


def _to_lists(dets: dict) -> dict:
    out = {}
    for name, fields in dets.items():
        out[name] = {}
        for f, a in fields.items():
            if f == "status":
                out[name][f] = [int(v) for v in a]
            elif f in ("pedestal_even", "pedestal_odd"):
                out[name][f] = [round(float(v), 3) for v in a]
            elif f == "gain_mev_per_adc":
                out[name][f] = [float(f"{v:.6g}") for v in a]
            elif f == "response_energy_gev":
                out[name][f] = [round(float(v), 4) for v in a]
            elif f == "response_scale":
                out[name][f] = [[round(float(v), 5) for v in row] for row in a]
            else:
                out[name][f] = [round(float(v), 4) for v in a]
    return {"detectors": out}


def calibrate_files(kind: str, setup: Setup, files, run: int, *, base_tag: str | None = None,
                    root: Path | None = None, min_entries: int | None = None,
                    beam_energy_gev: float | None = None, runs: tuple[int, int] | None = None) -> CalibrationResult:
    """Derive ``kind`` constants from raw ``files``; the base conditions of ``run`` fill the rest.

    ``electron``: the files must be electron-beam runs; the beam energy of each file is
    ``beam_energy_gev`` if given (refused if it disagrees with the one the file records), else the
    one recorded by the simulator in the file (``simulation.beam_energy_gev``), else the
    setup's nominal beam energy; a response or section scale outside the plausible ranges of
    :mod:`na64reco.constants` is refused.  ``runs``: the run range the constants will be
    published for; a file of another run is a ConfigError.  Two files holding the same events
    (the same file, a copy, the same simulation seed and settings...: :mod:`na64reco.io.distinct`)
    are a ConfigError.  A calorimeter kind that calibrates no channel (too few events) is an error.
    """
    if kind not in KINDS:
        raise NA64Error(f"unknown calibration kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if not files:
        raise NA64Error("no input files given")
    check_distinct(files, f"calibration inputs ({kind})")  # one file twice would weigh twice
    if runs is not None:
        check_runs(files, setup, runs)
        check_one_base(base_tag or default_tag(setup.name, root), *runs, payloads=_BASE_PAYLOADS[kind], root=root)
    base = load_conditions(setup, run, base_tag, root=root)
    if kind in TRACKER_KINDS:
        return _calibrate_tracker(kind, setup, files, base, beam_energy_gev, base_tag, root)
    body = _base_body(setup, base)
    result = CalibrationResult(kind, 0, {})

    def events_of(f, path):  # the file's events a calibration may use (blinding)
        conditions = base if f.run == run else load_conditions(setup, f.run, base_tag, root=root)
        events, withheld = calibration_events(f.events(), setup, conditions, str(path))
        result.withheld += withheld
        return events
    if kind == "pedestals":
        min_entries = 50 if min_entries is None else min_entries
        sums = PedestalSums(max(d.n_channels for d in setup.calorimeters.values()))
        for path in files:
            with open_raw(path, setup=setup.name) as f:
                result.n_events += sums.add(events_of(f, path), setup)
        if result.n_events == 0:
            raise NA64Error(f"no random-trigger events in {', '.join(map(str, files))}: "
                            "pedestals need a pedestal run (simulate --process pedestal)")
        derived = pedestal_constants(sums, setup)
        for name, d in derived.items():
            ok = d["entries"] >= min_entries
            for f in ("pedestal_even", "pedestal_odd", "noise_adc"):
                body[name][f][ok] = d[f][ok]
            result.calibrated[name] = np.flatnonzero(ok).tolist()
            result.skipped[name] = [(int(c), f"{d['entries'][c]} digits < {min_entries}") for c in np.flatnonzero(~ok)]
        _require_a_channel(result, derived, min_entries, "digits", files)
    elif kind == "electron":
        prm = electron_params(setup)
        min_entries = prm["min_events"] if min_entries is None else min_entries
        col = SectionSums(setup, base)
        for path in files:
            with open_raw(path, setup=setup.name) as f:
                check_electron_beam(f, path, setup)
                energy = file_beam_energy(f, path, setup, beam_energy_gev)
                result.n_events += col.add(events_of(f, path), energy, str(path))
        points = []
        for energy in col.energies():
            sums = col.sums(energy)
            if len(sums) < min_entries:
                result.skipped.setdefault("ECAL", []).append(
                    (-1, f"{energy:g} GeV: {len(sums)} events < {min_entries}, not used"))
                continue
            points.append(fit_response_point(sums, energy, prm["core_sigmas"]))
            check_response_point(points[-1], col.sources[energy])
        if not points:
            raise NA64Error(f"electron calibration: no beam energy with >= {min_entries} events in "
                            f"{', '.join(map(str, files))}")
        table_e, table_s = response_table(points, prm["unity_below_gev"])
        body["ECAL"]["response_energy_gev"] = table_e
        body["ECAL"]["response_scale"] = table_s
        derived = {"ECAL": {"points": points, "response_energy_gev": table_e, "response_scale": table_s}}
    elif kind == "timing":
        min_entries = TIMING_MIN_ENTRIES if min_entries is None else min_entries
        col = TimeCollector(setup, base)
        for path in files:
            with open_raw(path, setup=setup.name) as f:
                col.add(events_of(f, path), str(path))
        result.n_events = col.n_events
        derived = time_offsets(col, min_entries=min_entries)
        for name, d in derived.items():
            ok = np.isfinite(d["time_offset"])
            body[name]["time_offset_ns"][ok] = d["time_offset"][ok]
            result.calibrated[name] = np.flatnonzero(ok).tolist()
            result.skipped[name] = [(int(c), d["reason"][c]) for c in np.flatnonzero(~ok)]
        _require_a_channel(result, derived, min_entries, "clean pulses", files)
    else:
        min_entries = 200 if min_entries is None else min_entries
        col = AmplitudeCollector(setup, base)
        for path in files:
            with open_raw(path, setup=setup.name) as f:
                col.add(events_of(f, path), str(path))
        result.n_events = col.n_events
        derived = mip_gains(col, min_entries=min_entries)
        for name, d in derived.items():
            ok = np.isfinite(d["gain"])
            body[name]["gain_mev_per_adc"][ok] = d["gain"][ok]
            result.calibrated[name] = np.flatnonzero(ok).tolist()
            result.skipped[name] = [(int(c), d["reason"][c]) for c in np.flatnonzero(~ok)]
        _require_a_channel(result, derived, max(min_entries, MIN_FIT_ENTRIES), "MIP hits", files)
    result.derived = derived
    result.content = _to_lists(body)
    return result


def _require_a_channel(result: CalibrationResult, derived: dict, needed: int, what: str, files) -> None:
    """A calorimeter calibration that calibrated no channel publishes nothing: refuse it, naming the
    channel that came closest (channels that cannot be calibrated whatever the statistics left out)."""
    if result.n_calibrated:
        return
    most, where = -1, ""
    for name, d in derived.items():
        for ch in np.flatnonzero(~d.get("near_threshold", np.zeros(len(d["entries"]), bool))):
            if d["entries"][ch] > most:
                most, where = int(d["entries"][ch]), f"{name} channel {ch}"
    closest = f"at most {most} in a channel ({where})" if most > 0 else "none in any channel"
    raise NA64Error(f"{result.kind} calibration: too few {what} in {result.n_events} events of "
                    f"{', '.join(map(str, files))}: {closest}, {needed} needed per channel (--min-entries); "
                    "give a longer run")


def _calibrate_tracker(kind: str, setup: Setup, files, base: RunConditions, beam_energy_gev: float | None,
                       base_tag: str | None, root: Path | None) -> CalibrationResult:
    """The tracker kinds: beam runs -> a new ``tracker`` payload body.  A measurement that finds too
    little in the runs (a run of another kind: no beam tracks) is an error naming the files."""
    runs = read_beam_runs(files, setup, beam_energy_gev)
    withheld = 0
    for i, r in enumerate(runs):
        number = int(r.events["run"][0]) if len(r.events) else int(base.run)
        conditions = base if number == base.run else load_conditions(setup, number, base_tag, root=root)
        events, hidden = calibration_events(r.events, setup, conditions, str(r.path))
        runs[i] = replace(r, events=events)
        withheld += hidden
    n = sum(len(r.events) for r in runs)
    try:
        result = _tracker_result(kind, setup, runs, base, n)
        result.withheld = withheld
        return result
    except NA64Error as exc:
        if type(exc) is not NA64Error:
            raise
        raise NA64Error(f"{', '.join(map(str, files))} ({n} events): {exc}") from None


def _tracker_result(kind: str, setup: Setup, runs, base: RunConditions, n: int) -> CalibrationResult:
    if kind == "alignment":
        res = align(runs, setup, base)
        return CalibrationResult(kind, n, alignment_content(setup, base, res), derived={"alignment": res},
                                 payload="tracker", report=res.summary())
    if kind == "momentum-scale":
        scales = measure_scales(runs, setup, base)
        return CalibrationResult(kind, n, scale_content(setup, base, scales), derived={"scales": scales},
                                 payload="tracker", report=scale_summary(scales, n))
    res = measure_planes(runs, setup, base)
    return CalibrationResult(kind, n, efficiency_content(setup, base, res), derived={"planes": res},
                             payload="tracker", report=res.summary())


def publish_result(result: CalibrationResult, setup: Setup, tag: str, runs: tuple[int, int], *,
                   base_tag: str | None = None, root: Path | None = None, sources=()) -> Path:
    """Write ``result`` as a new conditions version (of its payload) and a new ``tag``, over the payload
    lists of ``base_tag`` (default: the setup's tag in ``default_tags.yaml``, the one the constants were
    derived against; before stop 49 it was ``<setup>-default``, and a tag made without ``--base-tag`` lost
    the default tag's newer payload files outside its run range)."""
    base_tag = base_tag or default_tag(setup.name, root)
    if result.payload == "tracker":
        what = f"{result.kind} derived from beam tracks, the other tracker constants from {base_tag}"
    elif result.kind == "electron":
        energies = ", ".join(f"{p.beam_energy:g}" for p in result.derived["ECAL"]["points"])
        what = (f"ECAL section response table from beam electrons of {energies} GeV (unit scale at the "
                f"lowest table energy and below); channel constants from {base_tag}")
    else:
        what = f"{result.n_calibrated} channels derived, the others from {base_tag}"
    comment = (f"{result.kind} calibration from {result.n_events} events"
               + (f" of {', '.join(display_name(s) for s in sources)}" if sources else "") + f"; {what}")
    return publish(setup.name, tag, runs, {result.payload: result.content},
                   base_tag=base_tag, comment=comment,
                   description=f"{result.kind} calibration for runs {runs[0]}-{runs[1]}", root=root)
