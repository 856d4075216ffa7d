"""Event display: the setup from the top (x-z) and the side (y-z) with hits, fitted
tracks and calorimeter cell energies of one raw event.

Drawn in the NA64 plot style (:func:`na64reco.plotting.na64_style`) with the "NA64
Simulation" / "NA64 Internal" label; every drawn element has a legend entry (each
magnet station's track in each view, also when it has none there) and the cell energies
a labelled colour bar in GeV.  A *data* event inside the setup's protected region
(``selections/blinding.yaml``) is not drawn: it stays hidden until ``na64reco unblind``.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from na64reco.units import GeV

_CALO_COLOURS = {"calorimeter": "#f89c20", "modules": "#964a8b", "paddles": "#7a21dd", "counter": "#3f90da"}
_CALO_KINDS = {"calorimeter": "calorimeter", "modules": "calorimeter (modules)", "paddles": "veto paddles",
               "counter": "beam counter"}
_TRACK_COLOURS = ("#5790fc", "#e42536", "#2ca02c", "#964a8b")
_CELL_CMAP = "Reds"


def _momentum_text(p) -> str:
    """A reconstructed momentum for the summary line ("not reconstructed" for NaN)."""
    p = float(p)
    return f"{p:.1f} GeV" if np.isfinite(p) else "not reconstructed"


def check_image_output(path, option: str) -> None:
    """Refuse (one-line :class:`~na64reco.errors.ConfigError`) an image file name whose extension
    matplotlib does not write (``.png``, ``.pdf``, ``.svg``, ...; not ``.pgf``, LaTeX code):
    called before any work, so a wrong name does not cost the drawing."""
    from matplotlib.backend_bases import FigureCanvasBase

    from na64reco.errors import ConfigError

    formats = sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix[1:] not in formats:
        found = f"extension {suffix} is not an image format" if suffix else "no file extension"
        raise ConfigError(f"{option} {path}: {found}; expected one of {', '.join('.' + f for f in formats)}")


def check_not_blinded(reco, setup_name: str, reference=None) -> None:
    """Raise :class:`~na64reco.errors.BlindingError` if a data event (one record of
    ``reco``) lies in the protected region of ``setup_name`` and in no visible control, or
    is protected by the reference reconstruction (``reference``, a one-event mask from
    :func:`~na64reco.selection.blinding.reference_protected`)."""
    from na64reco.errors import BlindingError
    from na64reco.selection.blinding import load_protection, protected_mask

    protection = load_protection(setup_name)
    if bool(protected_mask(reco, setup_name)[0]) or (reference is not None and bool(reference[0])):
        r = reco[0]
        # one message whatever the reason (inside, not measured, or only by the reference
        # reconstruction): which it is, or the value, would tell about a hidden event
        raise BlindingError(f"run {int(r.run)} event {int(r.event)}: this {setup_name} data event is not provably "
                            f"outside the protected region {protection.protected.text} (selections/blinding.yaml); "
                            "it stays hidden until `na64reco unblind`")


def draw_event(raw_events, index: int, setup, conditions, *, title: str = "", output=None, data: bool = False,
               source: str = ""):
    """Draw event ``index`` of ``raw_events``; returns the matplotlib figure (saved, and
    not kept by pyplot, if ``output``).  A data event (``data``, or events read from a data
    file, which carry that mark whatever ``data`` says) gets "Internal" labels, and one in
    the protected region raises :class:`~na64reco.errors.BlindingError`.  ``source``: the file the
    events come from, named by the errors of bad digits."""
    from na64reco.io.raw import is_data_events, release_data_events
    from na64reco.plotting import DPI, exp_label, na64_style
    from na64reco.reco.event import reconstruct
    from na64reco.reco.tracking.stage import event_display
    from na64reco.reco.waveform import reconstruct_digits

    n = len(raw_events)
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not -n <= index < n:
        raise IndexError(f"draw_event(): event index {index!r} is not one of the {n} events of "
                         f"{source or 'raw_events'} (0..{n - 1}, or negative from the end)")
    index = int(index) % n
    data = data or is_data_events(raw_events)
    raw_events = release_data_events(raw_events)  # withheld below, before anything is drawn
    one = raw_events[index: index + 1]
    reco = reconstruct(one, setup, conditions, source)
    if data:  # the reference always: setup and conditions are the caller's objects, changed at will
        from na64reco.selection.blinding import reference_protected

        check_not_blinded(reco, setup.name, reference_protected(one, setup, conditions, reconstruct, always=True))
    trk = event_display(raw_events, index, setup, conditions)
    calo = one.calo[0]
    digits = reconstruct_digits(np.asarray(calo.det), np.asarray(calo.chan), np.asarray(calo.adc).reshape(-1, 32),
                                setup, conditions, source=source)
    energy_of = {}
    for d, c, e, g in zip(digits.det, digits.chan, digits.energy, digits.good, strict=True):
        if g:
            energy_of[(int(d), int(c))] = energy_of.get((int(d), int(c)), 0.0) + float(e)
    cells = {k: _projected_cells(setup, k, energy_of) for k in (0, 1)}
    e_max = max([e for view in cells.values() for *_, e in view] or [1.0])
    r = reco[0]
    with na64_style():
        fig = _figure((22, 13), managed=output is None)
        axes = fig.subplots(2, 1, sharex=True)
        import matplotlib.cm
        import matplotlib.colors

        mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, e_max), _CELL_CMAP)
        for ax, coord in zip(axes, ("x", "y"), strict=True):
            _draw_view(ax, coord, setup, trk, cells[0 if coord == "x" else 1], mappable)
        axes[1].set_xlabel("z [m]")
        cbar = fig.colorbar(mappable, ax=list(axes), location="bottom", fraction=0.04, pad=0.02, aspect=60)
        cbar.set_label("calorimeter cell energy, summed over the other transverse coordinate [GeV]", loc="right",
                       fontsize="small")
        cbar.ax.tick_params(labelsize="x-small")
        modules = ", ".join(f"{e:.1f}" for e in np.asarray(r.hcal_module_energy))
        fields = reco.fields  # NA64e (one spectrometer) has no p_out; it has the SRD
        summary = (rf"$p_{{in}}$ = {_momentum_text(r.p_in)},  "
                   + (rf"$p_{{out}}$ = {_momentum_text(r.p_out)},  " if "p_out" in fields else "")
                   + (rf"$E_{{SRD}}$ = {float(r.srd_energy) * 1000:.1f} MeV,  " if "SRD" in setup.calorimeters else "")
                   + rf"$E_{{ECAL}}$ = {float(r.ecal_energy):.2f} GeV,  $E_{{HCAL}}$ = {float(r.hcal_energy):.2f} GeV "
                   f"(modules {modules} GeV),  "
                   rf"$E_{{VETO}}$ = {float(r.veto_energy) * 1000:.1f} MeV,  "
                   rf"$E_{{VHCAL}}$ = {float(r.vhcal_energy):.2f} GeV")
        axes[0].set_title((title + "\n" if title else "") + summary, fontsize="x-small", pad=48, loc="left")
        engine = fig.get_layout_engine()
        engine.execute(fig)
        fig.set_layout_engine("none")
        exp_label(axes[0], data=data, rlabel=f"{setup.name}, run {int(r.run)}, event {int(r.event)}")
        if output is not None:
            fig.savefig(output, dpi=DPI)
    return fig


def _figure(figsize, managed: bool):
    """A pyplot figure for notebooks (``managed``), else a bare one (no backend, not kept)."""
    if managed:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _draw_view(ax, coord: str, setup, trk: dict, cells, mappable) -> None:
    """One projection: magnets, tracker planes, detector outlines, cell energies, hits, tracks."""
    from matplotlib.patches import Rectangle

    k = 0 if coord == "x" else 1
    for i, m in enumerate(setup.magnets.values()):
        zc = m.center_z / 1000
        ax.axvspan(zc - m.length / 2000, zc + m.length / 2000, color="#5790fc", alpha=0.08,
                   label="dipole magnet" if i == 0 else None)
        ax.text(zc, 0.97, f"{m.name} ({m.bend_plane} bend)", transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize="xx-small", color="#3f6fd0")
    first = True
    for p in setup.planes:
        if p.measures == coord:
            ax.plot([p.z / 1000] * 2, [p.center - p.width / 2, p.center + p.width / 2], color="0.6", lw=1.5,
                    label=f"tracker plane (measures {coord})" if first else None)
            first = False
    lo = min(det.center[k] - det.size[k] / 2 for det in setup.calorimeters.values())
    hi = max(det.center[k] + det.size[k] / 2 for det in setup.calorimeters.values())
    y0, y1 = max(lo, -400) - 20, min(hi, 400) + 20
    ax.set_ylim(y0, y1)
    line = 0.07 * (y1 - y0)  # height of a name label
    kinds, placed = set(), []
    for det in sorted(setup.calorimeters.values(), key=lambda d: d.z):
        z0, depth = det.z / 1000, max(det.depth / 1000, 0.05)
        half = det.size[k] / 2
        centre = det.center[k] + (det.offset_y if k == 1 else 0.0)
        ax.add_patch(Rectangle((z0, centre - half), depth, 2 * half, fill=False, ec=_CALO_COLOURS[det.kind], lw=1.5,
                               label=None if det.kind in kinds else _CALO_KINDS[det.kind]))
        kinds.add(det.kind)
        # the name above the outline (inside the top of the view if it reaches beyond), else
        # higher up or below the outline, wherever it does not overlap a name already written
        top = min(centre + half, y1 - 1.1 * line)
        slots = [top + i * line for i in range(4)] + [centre - half - (i + 1) * line for i in range(4)]
        free = [y for y in slots if y0 <= y <= y1 - line
                and not any(abs(z0 - z) < 1.2 and abs(y - yy) < line for z, yy in placed)]
        y = free[0] if free else top
        placed.append((z0, y))
        ax.text(z0, y, det.name, fontsize="xx-small", va="bottom", color=_CALO_COLOURS[det.kind], clip_on=True)
    cmap, norm = mappable.get_cmap(), mappable.norm
    total = {}
    for det, *_, e in cells:
        total[det.name] = total.get(det.name, 0.0) + e
    for det, z, depth, c, size, e in cells:
        ax.add_patch(Rectangle((z, c - size / 2), depth, size, facecolor=cmap(norm(e)), lw=0, zorder=2))
        if e > 0.05 * total[det.name] and depth >= 0.3 and size >= 100:  # room for the text
            ax.text(z + depth / 2, c, f"{e:.2f}\nGeV", fontsize=11, ha="center", va="center", zorder=3,
                    color="white" if norm(e) > 0.6 else "black", linespacing=0.9)
    hits = trk["hits"]
    sel = hits["coord"] == coord
    on = sel & hits["on_track"]
    off = sel & ~hits["on_track"]
    ax.scatter(hits["z"][on] / 1000, hits["pos"][on], s=30, c="k", zorder=5, label="hit on track")
    ax.scatter(hits["z"][off] / 1000, hits["pos"][off], s=30, facecolors="none", edgecolors="#e42536", zorder=5,
               label="hit not on track")
    for i, station in enumerate(setup.magnets):
        colour = _TRACK_COLOURS[i % len(_TRACK_COLOURS)]
        tracks = [t for t in trk["tracks"] if t["coord"] == coord and t["station"] == station]
        if not tracks:
            ax.plot([], [], ls=":", color=colour, label=f"{station} track: none in this view")
        for t in tracks:
            where = "upstream" if i == 0 else "downstream"
            label = f"{station} track ({where})" + (f", p = {t['p']:.1f} GeV" if "p" in t else ", p in the other view")
            ax.plot(np.asarray(t["z"]) / 1000, t["pos"], "-", lw=2, color=colour, zorder=4, label=label)
    ax.set_ylabel(f"{coord} [mm]")
    ax.text(0.005, 0.03, "top view (x-z)" if coord == "x" else "side view (y-z)", transform=ax.transAxes,
            fontsize="x-small", va="bottom")
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="xx-small", frameon=False)


def _projected_cells(setup, k: int, energy_of: dict) -> list:
    """``(det, z, depth, centre, size, energy)`` of every cell with energy, summed over the
    other transverse coordinate (``k`` = 0: x, 1: y); lengths in m and mm."""
    out = []
    for det in setup.calorimeters.values():
        if det.kind not in ("calorimeter", "modules"):
            continue
        n_cells = det.nx if k == 0 else det.ny
        z = det.z / 1000
        for s in range(det.n_sections):
            depth = det.section_depths[s] / 1000
            proj = np.zeros(n_cells)
            for ix in range(det.nx):
                for iy in range(det.ny):
                    proj[ix if k == 0 else iy] += energy_of.get((det.id, int(det.channel(s, ix, iy))), 0.0)
            for i, e in enumerate(proj):
                if e > 0:
                    cx, cy = det.cell_center(i if k == 0 else 0, 0 if k == 0 else i)
                    out.append((det, z, depth, cx if k == 0 else cy, det.cell_size[k], e / GeV))
            z += depth
    return out
