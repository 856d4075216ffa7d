"""Plots: structure, not pixels.  On blinded data every hidden range of the protected
variable is a hatched patch labelled "blinded" spanning exactly the protected range
read from selections/blinding.yaml; every axes has a y label (events per bin width with
its unit), colour bars are labelled, N-1 cut lines are in the legend, the experiment
label reads "NA64 Internal" (data) or "NA64 Simulation"; the event display names each
station's track in both views; library plotting leaves pyplot and the global style alone."""

from __future__ import annotations

import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Text
from test_processors_synthetic import synthetic_processor, write_raw

from na64reco.errors import BlindingError
from na64reco.plotting import (
    blinded_intervals,
    control_figures,
    control_plots,
    control_specs,
    na64_style,
    range_text,
)
from na64reco.runner import RunOptions, run_files
from na64reco.selection.blinding import load_protection
from na64reco.selection.cuts import BLINDED

PROTECTED_VARIABLE = {"na64mu": "p_out", "na64e": "ecal_energy"}


def _processor(setup):
    if setup == "na64mu":
        from processors.na64mu_invisible import Processor
    else:
        from processors.na64e_invisible import Processor
    return synthetic_processor(Processor)()


@pytest.fixture(scope="module", params=["na64mu", "na64e"])
def output(request, tmp_path_factory):
    setup = request.param
    d = tmp_path_factory.mktemp(f"plots_{setup}")
    mc = str(write_raw(d / "mc.root", setup=setup, n_events=800))
    data = str(write_raw(d / "data.root", setup=setup, n_events=800, first_event=5000, truth=False))
    opts = RunOptions(f"{setup}_invisible", chunksize=800)
    out = run_files({"mc": [mc], "data": [data]}, opts, processor_instance=_processor(setup))
    return setup, out


def _build(out, stems):
    specs = dict(control_specs(out))
    with na64_style():
        return {s: specs[s]() for s in stems}


def _blinded_patches(ax):
    return [p for p in ax.patches if p.get_hatch() and (p.get_label() or "").startswith(BLINDED)]


def _texts(fig):
    return [t.get_text() for t in fig.findobj(Text)]


def test_data_distribution_of_the_protected_variable_has_a_blinded_band(output):
    setup, out = output
    protection = load_protection(setup)
    var = PROTECTED_VARIABLE[setup]
    assert protection.protected.variable == var
    h = out["data"]["hists"][var]
    lo_edge = h.axes[var].edges[0]
    figs = _build(out, [f"data_{var}", f"mc_{var}", "data_nminus1_signal_box"])
    for stem in (f"data_{var}", "data_nminus1_signal_box"):
        ax = figs[stem].axes[0]
        patches = _blinded_patches(ax)
        assert len(patches) == 1, stem
        p = patches[0]
        x0, x1 = p.get_x(), p.get_x() + p.get_width()
        assert x0 == pytest.approx(lo_edge) and x1 == pytest.approx(protection.protected.max)
        labels = ax.get_legend_handles_labels()[1]
        assert any(lab.startswith(BLINDED) for lab in labels)
    assert not _blinded_patches(figs[f"mc_{var}"].axes[0])  # simulation is never blinded


def test_every_data_plot_with_a_protected_axis_shows_the_band(output):
    setup, out = output
    var = PROTECTED_VARIABLE[setup]
    specs = dict(control_specs(out))
    stems = [s for s in specs if s.startswith("data_") and var in s and "nminus1" not in s]
    assert any("_vs_" in s for s in stems)
    figs = _build(out, stems)
    for stem, fig in figs.items():
        assert _blinded_patches(fig.axes[0]), stem


def test_nminus1_of_a_cut_on_data_is_blinded_except_the_visible_controls(output):
    setup, out = output
    protection = load_protection(setup)
    control = protection.visible_controls[0]
    cut = next(c for c in _processor(setup).selection.cuts if c.variable == control.variable)
    fig = _build(out, [f"data_nminus1_{cut.name}"])[f"data_nminus1_{cut.name}"]
    ax = fig.axes[0]
    (band,) = _blinded_patches(ax)
    scale = 1000.0 if "MeV" in ax.get_xlabel() else 1.0
    assert band.get_x() + band.get_width() == pytest.approx(control.min * scale)   # the controls stay visible
    other = fig if cut.name == "trigger" else _build(out, ["data_nminus1_trigger"])["data_nminus1_trigger"]
    (whole,) = _blinded_patches(other.axes[0])                                   # everything else is hidden
    assert (whole.get_x(), whole.get_x() + whole.get_width()) == pytest.approx(other.axes[0].get_xlim(), abs=1)


def test_labels_units_and_legends_of_every_control_plot(output):
    setup, out = output
    figs = control_figures({"data": out["data"]})
    figs.update(_build(out, ["mc_cutflow", f"mc_{PROTECTED_VARIABLE[setup]}"]))
    for stem, fig in figs.items():
        texts = _texts(fig)
        assert "NA64" in texts, stem
        assert ("Internal" if stem.startswith("data") else "Simulation") in texts, stem
        assert any("MOT" in t or "EOT" in t for t in texts), stem
        for ax in fig.axes:
            assert ax.get_ylabel().strip(), (stem, ax)
        assert fig.axes[0].get_legend() is not None, stem
    var = PROTECTED_VARIABLE[setup]
    assert figs[f"data_{var}"].axes[0].get_ylabel() == ("Events / 2 GeV" if setup == "na64mu" else "Events / 1 GeV")
    assert figs["data_veto_energy"].axes[0].get_ylabel() == "Events / 1 MeV"
    assert "[MeV]" in figs["data_veto_energy"].axes[0].get_xlabel()
    pair = next(s for s in figs if "_vs_" in s)
    cbar_ax = figs[pair].axes[1]
    assert cbar_ax.get_ylabel().startswith("Events / (") and "GeV" in cbar_ax.get_ylabel()


def test_nminus1_cut_lines_are_in_the_legend(output):
    setup, out = output
    sel = _processor(setup).selection
    ranged = [c for c in sel.cuts if c.type == "range" and (c.min is not None or c.max is not None)]
    figs = _build(out, [f"mc_nminus1_{c.name}" for c in ranged])
    for c in ranged:
        ax = figs[f"mc_nminus1_{c.name}"].axes[0]
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(dashed) == (c.min is not None) + (c.max is not None)
        labels = ax.get_legend_handles_labels()[1]
        assert any(lab.startswith(f"cut {c.name}:") for lab in labels), labels


def test_cutflow_is_linear_and_marks_the_blinded_row(output):
    _, out = output
    figs = _build(out, ["data_cutflow", "mc_cutflow"])
    ax = figs["data_cutflow"].axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "signal_box"
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_width() == 1.0            # the blinded row, full width
    assert BLINDED in [t.get_text() for t in ax.texts] and BLINDED in ax.get_legend_handles_labels()[1]
    assert not [p for p in figs["mc_cutflow"].axes[0].patches if p.get_hatch()]
    n = out["data"]["cutflow"].n
    assert f"{n[0]:,}".replace(",", " ") + " (100.0%)" in [t.get_text() for t in ax.texts]


def test_blinded_intervals_and_range_text():
    from na64reco.plotting import Blinding
    from na64reco.selection.schema import Region

    b = Blinding((Region("protected", "p_out", None, 80.0), Region("signal_box", "p_out", 10.0, 100.0)),
                 (Region("c", "veto_energy", 0.025, None),))
    assert blinded_intervals(b, "p_out", 0.0, 240.0) == [(0.0, 100.0)]
    assert blinded_intervals(b, "ecal_energy", 0.0, 5.0) == []
    assert blinded_intervals(b, "veto_energy", 0.0, 0.1, inside_box=True) == [(0.0, 0.025)]
    assert blinded_intervals(b, "ecal_energy", 0.0, 5.0, inside_box=True) == [(0.0, 5.0)]
    assert range_text("E", None, 0.025, "GeV") == "E < 25 MeV"
    assert range_text("E", 0.5, 5.0, "GeV") == "0.5 < E < 5 GeV"


def test_a_2d_blinded_band_stops_where_the_other_axis_is_a_visible_control():
    """(NA64e's E_ECAL < 50 GeV band covered every E_HCAL, the visible control E_HCAL >= 2 GeV too)"""
    import hist

    from na64reco.plotting import Blinding, PlotContext, figure_hist2d
    from na64reco.selection.schema import Region

    b = Blinding((Region("protected", "ecal_energy", None, 50.0),), (Region("c", "hcal_energy", 2.0, None),))
    h = hist.Hist(hist.axis.Regular(12, 0, 120, name="ecal_energy", label="E_ECAL [GeV]"),
                  hist.axis.Regular(6, 0, 6, name="hcal_energy", label="E_HCAL [GeV]"))
    h.fill(ecal_energy=[95.0, 30.0], hcal_energy=[0.5, 4.0])
    fig = figure_hist2d(h, PlotContext(data=True, blinding=b, setup="na64e"))
    (band,) = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert (band.get_x(), band.get_y(), band.get_width(), band.get_height()) == (0.0, 0.0, 50.0, 2.0)
    plt.close(fig)


def test_control_plots_leave_pyplot_the_backend_and_the_global_style_alone(output, tmp_path):
    _, out = output
    backend, figures, size = matplotlib.get_backend(), plt.get_fignums(), matplotlib.rcParams["font.size"]
    small = {"data": {**out["data"], "hists": {}, "nminus1": dict(list(out["data"]["nminus1"].items())[:1])}}
    written = control_plots(small, tmp_path)
    assert len(written) == 2 and all(p.stat().st_size > 1000 for p in written)
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
    assert matplotlib.rcParams["font.size"] == size


def _few_plots(out, per_kind=2):
    """``out`` with its cut-flows and the first ``per_kind`` N-1 plots, 1D and 2D histograms of each
    dataset: every kind of control plot, ~5x fewer than the whole set (each takes ~0.3 s)."""
    def few(hists, two_d):
        return dict([(k, h) for k, h in hists.items() if ("_vs_" in k) == two_d][:per_kind])
    return {k: {**v, "nminus1": dict(list(v["nminus1"].items())[:per_kind]),
                "hists": {**few(v["hists"], False), **few(v["hists"], True)}} for k, v in out.items()}


def test_control_plots_drawn_by_several_processes_are_the_same_files(output, tmp_path):
    """Two processes (this one and a ``python -m na64reco.plot_worker``) write byte for byte the
    files this process alone writes, and return them in the same order (every kind of plot of
    both datasets: the drawing does not depend on how many there are)."""
    out = _few_plots(output[1])
    stems = [stem for stem, _ in control_specs(out)]
    assert [any(k in s for s in stems) for k in ("_cutflow", "_nminus1_", "_vs_")] == [True] * 3
    one = control_plots(out, tmp_path / "one", workers=1)
    two = control_plots(out, tmp_path / "two", workers=2)
    assert [p.name for p in one] == [p.name for p in two] and len(one) >= 10
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in one)
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    # an output only this process can hold (not picklable): drawn here, the same files
    here = control_plots({k: {**v, "note": lambda: 0} for k, v in out.items()}, tmp_path / "here", workers=2)
    assert [p.read_bytes() for p in here] == [p.read_bytes() for p in one]


@pytest.mark.skipif(os.name != "posix", reason="the stand-in interpreter is a shell script")
def test_a_failing_plot_process_is_an_error_naming_it(output, tmp_path, monkeypatch):
    import sys

    from na64reco.errors import NA64Error

    out = _few_plots(output[1], per_kind=1)
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback: something broke in the worker' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(NA64Error, match=r"a drawing process failed \(share 1 of 2: Traceback: something broke"):
        control_plots(out, tmp_path / "plots", workers=2)


@pytest.mark.skipif(os.name != "posix", reason="the stand-in interpreter is a shell script")
@pytest.mark.parametrize("script", ["echo 'KeyboardInterrupt' >&2; exit 1", "kill -INT $$"])
def test_a_plot_process_stopped_by_ctrl_c_is_an_interruption(output, tmp_path, monkeypatch, script):
    """(Ctrl-C during the plots of `na64reco run` reached the drawing processes: "a drawing process
    failed (share 1 of 2: KeyboardInterrupt)", exit 1, instead of "interrupted", 130)"""
    import sys

    out = _few_plots(output[1], per_kind=1)
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(KeyboardInterrupt):
        control_plots(out, tmp_path / "plots", workers=2)


# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signal_file(tmp_path_factory):
    from na64reco.sim.generate import simulate
    from na64reco.units import GeV

    path = tmp_path_factory.mktemp("display") / "signal.root"
    simulate("na64mu", 300, run=7, output=path, process="signal", mass=0.1 * GeV, truth=True, seed=5)
    return path


def _display_inputs(path):
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import open_raw
    from na64reco.reco.event import reconstruct

    with open_raw(path) as raw:
        events = raw.events(0, raw.n_events)
        setup = load_setup(raw.setup, run=raw.run)
        conditions = load_conditions(setup, raw.run)
    reco = reconstruct(events, setup, conditions)
    return events, setup, conditions, reco


def test_event_display_names_both_tracks_and_labels_units(signal_file, tmp_path):
    from na64reco.display import draw_event

    events, setup, conditions, reco = _display_inputs(signal_file)
    n_out = np.asarray(reco.n_tracks_out)
    i = int(np.nonzero((np.asarray(reco.n_tracks_in) == 1) & (n_out == 1))[0][0])
    figures = plt.get_fignums()
    fig = draw_event(events, i, setup, conditions, output=tmp_path / "ev.png")
    assert (tmp_path / "ev.png").stat().st_size > 10_000 and plt.get_fignums() == figures
    views = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert len(views) == 2
    for ax in views:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        for station in setup.magnets:
            assert any(lab.startswith(f"{station} track") for lab in labels), labels
        assert "hit on track" in labels and any(lab.startswith("tracker plane") for lab in labels)
        assert ax.get_ylabel() in ("x [mm]", "y [mm]")
    bar = [ax for ax in fig.axes if ax.get_legend() is None]
    assert len(bar) == 1 and "[GeV]" in bar[0].get_xlabel()
    texts = _texts(fig)
    assert "NA64" in texts and "Simulation" in texts
    cells = [t for t in texts if t.endswith("\nGeV")]
    assert cells, "HCAL module energies are written with their unit"


def test_event_display_refuses_a_data_event_in_the_protected_region(signal_file):
    from na64reco.display import draw_event

    events, setup, conditions, reco = _display_inputs(signal_file)
    protection = load_protection("na64mu")
    p_out, veto = np.asarray(reco.p_out, float), np.asarray(reco.veto_energy, float)
    hidden = (p_out < protection.protected.max) & (veto < protection.visible_controls[0].min)
    i = int(np.nonzero(hidden)[0][0])
    with pytest.raises(BlindingError, match="protected region"):
        draw_event(events, i, setup, conditions, data=True)
    draw_event(events, i, setup, conditions, data=False, output=None)  # simulation: drawn
    plt.close("all")


def test_shaded_spans_stay_in_view_where_no_event_is():
    """The unblinded box plot: events only near the beam peak, the signal box (open below)
    and the sideband shaded; the x range shows both (it was trimmed to the filled bins, so
    the box and sideband named in the legend were off the plot)."""
    import hist

    from na64reco.plotting import figure_hist1d

    h = hist.Hist(hist.axis.Regular(120, 0, 240, name="p_out", label="p_out [GeV]"))
    h.fill(np.random.default_rng(1).normal(160, 5, 200))
    spans = [(None, 80.0, "signal box", "tab:red"), (80.0, 120.0, "sideband", "tab:blue")]
    with na64_style():
        x0, x1 = figure_hist1d(h, spans=spans).axes[0].get_xlim()
        assert x0 <= 0 and x1 >= 175
        x0, _ = figure_hist1d(h).axes[0].get_xlim()  # without spans the range is still trimmed to the data
        assert x0 > 100
