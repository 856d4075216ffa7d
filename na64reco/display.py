"""Event display: the setup from the top (x-z) and the side (y-z) with hits, fitted
tracks and calorimeter cell energies of one raw event."""

from __future__ import annotations

import numpy as np

from na64reco.units import GeV

_CALO_COLOURS = {"calorimeter": "tab:orange", "modules": "tab:brown", "paddles": "tab:purple", "counter": "tab:gray"}


def draw_event(raw_events, index: int, setup, conditions, *, title: str = "", output=None):
    """Draw event ``index`` of ``raw_events``; returns the matplotlib figure (saved if ``output``)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from na64reco.reco.event import reconstruct
    from na64reco.reco.tracking.stage import event_display
    from na64reco.reco.waveform import reconstruct_digits

    one = raw_events[index: index + 1]
    reco = reconstruct(one, setup, conditions)
    trk = event_display(raw_events, index, setup, conditions)
    calo = one.calo[0]
    digits = reconstruct_digits(np.asarray(calo.det), np.asarray(calo.chan), np.asarray(calo.adc).reshape(-1, 32),
                                setup, conditions)
    fig, axes = plt.subplots(2, 1, figsize=(14, 8), sharex=True)
    for ax, coord in zip(axes, ("x", "y"), strict=True):
        k = 0 if coord == "x" else 1
        for m in setup.magnets.values():
            zc = m.center_z / 1000
            ax.axvspan(zc - m.length / 2000, zc + m.length / 2000, color="tab:blue", alpha=0.08)
            ax.text(zc, 0.97, f"{m.name} ({m.bend_plane} bend)", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=8, color="tab:blue")
        for p in setup.planes:
            if p.measures == coord:
                ax.plot([p.z / 1000] * 2, [p.center - p.width / 2, p.center + p.width / 2], color="0.6", lw=1)
        energy_of = {}
        for d, c, e, g in zip(digits.det, digits.chan, digits.energy, digits.good, strict=True):
            if g:
                energy_of[(int(d), int(c))] = energy_of.get((int(d), int(c)), 0.0) + float(e)
        for det in setup.calorimeters.values():
            z0, depth = det.z / 1000, max(det.depth / 1000, 0.05)
            half = det.size[k] / 2
            centre = det.center[k] + (det.offset_y if k == 1 else 0.0)
            ax.add_patch(Rectangle((z0, centre - half), depth, 2 * half, fill=False,
                                   ec=_CALO_COLOURS[det.kind], lw=1))
            ax.text(z0, centre + half, det.name, fontsize=7, va="bottom", color=_CALO_COLOURS[det.kind],
                    clip_on=True)
            _draw_cells(ax, det, k, energy_of, Rectangle)
        hits = trk["hits"]
        sel = hits["coord"] == coord
        on = sel & hits["on_track"]
        off = sel & ~hits["on_track"]
        ax.scatter(hits["z"][on] / 1000, hits["pos"][on], s=14, c="k", zorder=5, label="hit on track")
        ax.scatter(hits["z"][off] / 1000, hits["pos"][off], s=14, facecolors="none", edgecolors="r", zorder=5,
                   label="hit not on track")
        for t in trk["tracks"]:
            if t["coord"] == coord:
                label = f"{t['station']}: p = {t['p']:.1f} GeV" if "p" in t else None
                ax.plot(np.asarray(t["z"]) / 1000, t["pos"], "-", lw=1.2, zorder=4, label=label)
        ax.set_ylabel(f"{coord} [mm]")
        ax.set_title("top view (x-z)" if coord == "x" else "side view (y-z)", fontsize=10, loc="left")
        ax.legend(loc="lower left", fontsize=7)
        lo = min(det.center[k] - det.size[k] / 2 for det in setup.calorimeters.values())
        hi = max(det.center[k] + det.size[k] / 2 for det in setup.calorimeters.values())
        ax.set_ylim(max(lo, -400) - 20, min(hi, 400) + 20)
    r = reco[0]
    summary = (f"run {int(r.run)}  event {int(r.event)}   p_in = {float(r.p_in):.1f} GeV   "
               f"p_out = {float(r.p_out):.1f} GeV   E_ECAL = {float(r.ecal_energy):.2f} GeV   "
               f"E_HCAL = {float(r.hcal_energy):.2f} GeV (modules "
               + " ".join(f"{e:.1f}" for e in np.asarray(r.hcal_module_energy)) +
               f")   VETO = {float(r.veto_energy) * 1000:.1f} MeV   VHCAL = {float(r.vhcal_energy):.2f} GeV")
    fig.suptitle((title + "\n" if title else "") + summary, fontsize=9)
    axes[1].set_xlabel("z [m]")
    fig.tight_layout()
    if output is not None:
        fig.savefig(output, dpi=120)
        plt.close(fig)
    return fig


def _draw_cells(ax, det, k, energy_of, Rectangle):
    """Shade the cells of ``det`` by their energy, projected on coordinate ``k``."""
    if det.kind not in ("calorimeter", "modules"):
        return
    n_cells = det.nx if k == 0 else det.ny
    z = det.z / 1000
    for s in range(det.n_sections):
        depth = det.section_depths[s] / 1000
        proj = np.zeros(n_cells)
        for ix in range(det.nx):
            for iy in range(det.ny):
                e = energy_of.get((det.id, int(det.channel(s, ix, iy))), 0.0)
                proj[ix if k == 0 else iy] += e
        total = proj.sum()
        for i, e in enumerate(proj):
            if e <= 0:
                continue
            cx, cy = det.cell_center(i if k == 0 else 0, 0 if k == 0 else i)
            c = cx if k == 0 else cy
            size = det.cell_size[k]
            ax.add_patch(Rectangle((z, c - size / 2), depth, size, color="tab:red",
                                   alpha=0.15 + 0.75 * e / total, lw=0))
            if e > 0.05 * total and depth >= 0.3:
                ax.text(z + depth / 2, c, f"{e / GeV:.2f}", fontsize=6, ha="center", va="center")
        z += depth
