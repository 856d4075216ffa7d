"""Selections as data: loading, validation messages, cut evaluation, cut-flow tables."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import yaml

from na64reco.errors import ConfigError, NA64Error
from na64reco.selection import CutflowTable, build_selection, cut_masks, load_selection
from na64reco.selection.cuts import BLINDED, BOX, CutMasks, region_mask
from na64reco.selection.schema import known_variables


def test_shipped_selections_load_in_order_with_units():
    mu = load_selection("na64mu_invisible")
    assert mu.setup == "na64mu"
    assert mu.cut_names[:3] == ["trigger", "single_track_in", "p_in_window"]
    assert mu.cut("s4_fired").min == pytest.approx(0.0006)      # 0.6 MeV in GeV
    assert mu.cut("p_in_window").min == pytest.approx(140.0)
    assert mu.signal_box.variable == "p_out" and mu.signal_box.max == pytest.approx(80.0)
    assert {s.name for s in mu.sidebands} == {"p_out_80_120", "veto_failed_box"}
    e = load_selection("na64e_invisible")
    assert e.signal_box.variable == "ecal_energy" and e.signal_box.max == pytest.approx(50.0)
    assert e.cut("hcal_veto").max == pytest.approx(2.0)
    assert len(mu.sha256) == 64 and mu.sha256 != e.sha256


BASE = {
    "schema_version": 1, "name": "t", "setup": "na64mu",
    "cuts": [{"name": "single_in", "type": "equal", "variable": "n_tracks_in", "value": 1},
             {"name": "p_in_window", "type": "range", "variable": "p_in", "min": "140 GeV", "max": "180 GeV"}],
    "signal_box": {"variable": "p_out", "max": "80 GeV"},
}


def _write(tmp_path, data, text=None):
    p = tmp_path / "sel.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data))
    return p


def _mutated(**changes):
    import copy

    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        obj = d
        keys = path.split("__")
        for k in keys[:-1]:
            obj = obj[int(k)] if k.isdigit() else obj[k]
        last = keys[-1]
        obj[int(last) if last.isdigit() else last] = value
    return d


@pytest.mark.parametrize("changes, key, words", [
    ({"cuts__0__type": "between"}, "cuts.0.type", ["range", "equal", "bits", "each_in_range"]),
    ({"cuts__1__variable": "p_inn"}, "cuts.1.variable", ["p_in", "ecal_energy"]),
    ({"cuts__1__min": 140}, "cuts.1.min", ["no unit", "GeV"]),
    ({"cuts__1__min": "140 mm"}, "cuts.1.min", ["energy unit"]),
    ({"schema_version": 7}, "schema_version", ["reads 1"]),
    ({"setup": "na62"}, "setup", ["na64mu", "na64e"]),
    ({"cuts__0__colour": "red"}, "cuts.0.colour", ["allowed keys"]),
    ({"cuts__1__name": "single_in"}, "cuts", ["duplicate"]),
    ({"cuts__1__max": "100 GeV"}, "cuts.1.max", ["above min"]),
    ({"cuts__0__variable": "p_in"}, "cuts.0.variable", ["count"]),
    ({"signal_box": {"variable": "p_out"}}, "signal_box.min", ["needs"]),
    ({"sidebands": [{"name": "sb", "fails": "nope", "variable": "p_out", "max": "80 GeV"}]},
     "sidebands.0.fails", ["single_in", "p_in_window"]),
    ({"cuts__0": {"name": "t", "type": "bits", "variable": "trigger", "bits": ["physix"]}},
     "cuts.0.bits", ["physics", "random"]),
    ({"cuts__1__variable": "srd_module_energy"}, "cuts.1.variable", ["unknown variable"]),
    ({"cuts__1__variable": "counter_S9_energy"}, "cuts.1.variable", ["counter_S4_energy"]),
    # a range that no value of a never-negative variable is in (a sign slip in a tuned cut)
    ({"cuts__1": {"name": "fit", "type": "range", "variable": "chi2_out", "max": -5}}, "cuts.1.max",
     ["chi2_out is never negative", "keeps no event"]),
    ({"cuts__1": {"name": "n", "type": "range", "variable": "n_tracks_out", "max": 0}}, "cuts.1.max",
     ["n_tracks_out is never negative"]),
    ({"signal_box": {"variable": "p_out", "max": "-80 GeV"}}, "signal_box.max", ["p_out is never negative", "GeV"]),
])
def test_validation_errors_name_file_key_and_allowed_values(tmp_path, changes, key, words):
    p = _write(tmp_path, _mutated(**changes))
    with pytest.raises(ConfigError) as err:
        load_selection(p)
    msg = str(err.value)
    assert str(p) in msg and f"'{key}'" in msg, msg
    for w in words:
        assert w in msg, msg


def test_malformed_yaml_and_missing_file(tmp_path):
    p = _write(tmp_path, None, text="schema_version: 1\ncuts: [a, b\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_selection(p)
    with pytest.raises(ConfigError, match="not found"):
        load_selection(tmp_path / "none.yaml")


def test_dimensionless_bounds_are_plain_numbers(tmp_path):
    d = _mutated(cuts__1={"name": "chi2", "type": "range", "variable": "chi2_out", "max": "3 GeV"})
    with pytest.raises(ConfigError, match="plain number"):
        load_selection(_write(tmp_path, d))
    d = _mutated(cuts__1={"name": "chi2", "type": "range", "variable": "chi2_out", "max": 3})
    assert load_selection(_write(tmp_path, d)).cut("chi2").max == 3.0


@pytest.mark.parametrize("bound", [float("nan"), float("inf"), "nan GeV", "inf GeV", "-inf GeV"])
def test_a_bound_that_is_not_finite_is_refused(tmp_path, bound):
    """(``max: .nan`` made the cut keep no event, ``max: .inf`` was accepted: silently)"""
    variable = "chi2_out" if isinstance(bound, float) else "p_out"
    d = _mutated(cuts__1={"name": "c", "type": "range", "variable": variable, "max": bound})
    words = "finite.*leave the key out for no bound" if isinstance(bound, float) else "is not a quantity"
    with pytest.raises(ConfigError, match=rf"key 'cuts\.1\.max'.*{words}"):
        load_selection(_write(tmp_path, d))


def test_known_variables_depend_on_setup():
    assert "srd_module_energy" in known_variables("na64e")
    assert "srd_module_energy" not in known_variables("na64mu")
    assert "counter_Smu_energy" in known_variables("na64mu")


# ----------------------------------------------------------------------------------------
def _records(n=400, seed=1):
    rng = np.random.default_rng(seed)
    p_in = rng.normal(160, 15, n)
    p_in[rng.random(n) < 0.1] = np.nan
    mods = rng.normal(2.2, 1.5, (n, 4))
    return ak.zip({
        "trigger": rng.integers(0, 4, n).astype(np.uint32),
        "n_tracks_in": rng.integers(0, 3, n), "p_in": p_in, "p_out": rng.uniform(0, 200, n),
        "hcal_module_energy": ak.from_numpy(mods, regulararray=True),
        "truth_weight": rng.uniform(0.5, 2, n),
    }, depth_limit=1)


SEL = {**BASE, "cuts": [
    {"name": "trig", "type": "bits", "variable": "trigger", "bits": ["physics"]},
    {"name": "single_in", "type": "equal", "variable": "n_tracks_in", "value": 1},
    {"name": "p_in_window", "type": "range", "variable": "p_in", "min": "140 GeV", "max": "180 GeV"},
    {"name": "hcal", "type": "each_in_range", "variable": "hcal_module_energy", "min": "1 GeV",
     "max": "4 GeV", "modules": [0, 2]},
]}


def test_cut_masks_agree_with_a_per_event_reference(tmp_path):
    sel = load_selection(_write(tmp_path, SEL))
    rec = _records()
    masks = cut_masks(rec, sel)
    for i, r in enumerate(ak.to_list(rec)):
        assert masks["trig"][i] == bool(r["trigger"] & 1)
        assert masks["single_in"][i] == (r["n_tracks_in"] == 1)
        p = r["p_in"]
        assert masks["p_in_window"][i] == (p == p and 140 <= p < 180)   # NaN fails
        assert masks["hcal"][i] == all(1 <= r["hcal_module_energy"][m] < 4 for m in (0, 2))


def test_var_length_module_variable_pads_with_nan(tmp_path):
    sel = load_selection(_write(tmp_path, {**SEL, "cuts": [SEL["cuts"][3]]}))
    rec = ak.zip({"hcal_module_energy": ak.Array([[2.0, 1.0, 3.0], [2.0], []])}, depth_limit=1)
    assert cut_masks(rec, sel)["hcal"].tolist() == [True, False, False]


def test_cutflow_table_matches_numpy_and_merges(tmp_path):
    sel = load_selection(_write(tmp_path, SEL))
    rec = _records(1000)
    masks = cut_masks(rec, sel)
    box = region_mask(rec, sel.signal_box)
    w = np.asarray(rec["truth_weight"])
    table = CutflowTable.from_selection(build_selection(masks, box), sel.cut_names, w, blinded=False)
    running = np.ones(len(rec), bool)
    expected = [running.copy()]
    for m in [*masks.values(), box]:
        running &= m
        expected.append(running.copy())
    assert table.labels == ["initial", *sel.cut_names, BOX]
    assert table.n.tolist() == [int(m.sum()) for m in expected]
    np.testing.assert_allclose(table.sumw, [w[m].sum() for m in expected])
    np.testing.assert_allclose(table.sumw2, [(w[m] ** 2).sum() for m in expected])
    allm = {**masks, BOX: box}
    for i, name in enumerate(allm):
        others = np.logical_and.reduce([m for k, m in allm.items() if k != name])
        assert table.nm1_n[i] == others.sum()
    # merging two halves gives the whole
    half = len(rec) // 2
    parts = []
    for sl in (slice(0, half), slice(half, None)):
        r = rec[sl]
        ms = cut_masks(r, sel)
        parts.append(CutflowTable.from_selection(build_selection(ms, region_mask(r, sel.signal_box)),
                                                 sel.cut_names, w[sl], blinded=False))
    merged = parts[0] + parts[1]
    assert merged.n.tolist() == table.n.tolist()
    np.testing.assert_allclose(merged.sumw, table.sumw)
    rows = merged.rows()
    assert rows[-1]["sumw_err"] == pytest.approx(np.sqrt(table.sumw2[-1]))


def test_cut_masks_give_the_packed_selection_tables(tmp_path):
    """The processors' numpy masks (CutMasks) give the same cut-flow and N-1 table as a
    coffea PackedSelection of the same cuts, to the last bit; and the same all()."""
    from coffea.analysis_tools import PackedSelection

    sel = load_selection(_write(tmp_path, SEL))
    rec = _records(1000)
    masks = cut_masks(rec, sel)
    box = region_mask(rec, sel.signal_box)
    w = np.asarray(rec["truth_weight"], dtype=float)
    packed = PackedSelection(dtype="uint64")
    for name, m in {**masks, BOX: box}.items():
        packed.add(name, m)
    ours = build_selection(masks, box)
    for weights in (w, None):
        a = CutflowTable.from_selection(ours, sel.cut_names, weights, blinded=False)
        b = CutflowTable.from_selection(packed, sel.cut_names, weights, blinded=False)
        for key in ("n", "sumw", "sumw2", "nm1_n", "nm1_sumw", "nm1_sumw2"):
            assert getattr(a, key).tolist() == getattr(b, key).tolist(), key
    names = list(masks)
    for subset in ([], names[:1], names, [*names[1:], BOX]):
        assert np.array_equal(ours.all(*subset), packed.all(*subset))
    with pytest.raises(NA64Error, match="no cut 'nope'"):
        ours.all("nope")
    # one and two cuts: coffea's all() of no names is every cut, and so is ours
    for k in (1, 2):
        packed, ours = PackedSelection(dtype="uint64"), CutMasks()
        for name, m in list({**masks, BOX: box}.items())[:k]:
            packed.add(name, m)
            ours.add(name, m)
        assert np.array_equal(ours.all(), packed.all())
        for a, b in zip(ours.nminusone_masks(*ours.names), packed.nminusone(*ours.names).result().masks[:-1],
                        strict=True):
            assert np.array_equal(a, b)


def test_blinded_table_never_prints_the_box(tmp_path):
    sel = load_selection(_write(tmp_path, SEL))
    rec = _records(200)
    masks = cut_masks(rec, sel)
    t = CutflowTable.from_selection(build_selection(masks, region_mask(rec, sel.signal_box)),
                                    sel.cut_names, None, blinded=True)
    merged = t + CutflowTable.from_selection(build_selection(masks, region_mask(rec, sel.signal_box)),
                                             sel.cut_names, None, blinded=False)
    for table in (t, merged):
        assert table.rows()[-1]["events"] == BLINDED
        assert table.nminusone_rows()[-1]["events"] == BLINDED
        box_line = next(ln for ln in table.format().splitlines() if ln.startswith(BOX))
        assert box_line.split()[1:] == [BLINDED, BLINDED]


def test_columns_of_kept_events_are_those_of_the_kept_records():
    """``Columns.take``: numeric and per-module columns sliced from the records' buffers,
    variable-length ones converted from the kept records (padded to the widest kept event):
    each the same dtype, shape and values as converting ``reco[keep]``."""
    from na64reco.reco.event import record
    from na64reco.selection.cuts import Columns, column

    rng = np.random.default_rng(3)
    n = 200
    counts = rng.integers(0, 4, n)
    counts[7] = 9  # the widest event, dropped below
    x = rng.normal(size=n)
    x[::9] = np.nan
    reco = record({"p_out": x, "n_tracks_in": rng.integers(0, 5, n), "trigger": rng.integers(0, 8, n).astype(np.uint32),
                   "hcal_module_energy": ak.from_numpy(rng.random((n, 4)), regulararray=True),
                   "veto_paddle_energy": ak.unflatten(rng.random(counts.sum()), counts)})
    keep = rng.random(n) < 0.7
    keep[7] = False
    cols = Columns(reco)
    cols["p_out"]  # converted before the take: sliced; the others after it
    taken = cols.take(keep)
    for name in reco.fields:
        ref = column(reco[keep], name)
        got = taken[name]
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        assert np.array_equal(got, ref, equal_nan=got.dtype.kind == "f"), name
    assert taken["veto_paddle_energy"].shape[1] == counts[keep].max() < 9


def test_columns_from_a_dict_name_a_missing_field():
    from na64reco.errors import NA64Error
    from na64reco.selection.cuts import Columns

    cols = Columns(None, {"p_out": np.ones(2)})
    assert cols["p_out"].tolist() == [1.0, 1.0]
    with pytest.raises(NA64Error, match="no field 'chi2_out' \\(has: p_out\\)"):
        cols["chi2_out"]


def test_a_negative_max_is_allowed_where_noise_makes_values_negative(tmp_path):
    """Energies are pedestal-subtracted sums: a cut below 0 GeV is odd but can select events."""
    d = _mutated(cuts__1={"name": "quiet", "type": "range", "variable": "veto_energy", "max": "-0.001 GeV"})
    assert load_selection(_write(tmp_path, d)).cut("quiet").max == pytest.approx(-0.001)


def test_ranges_are_half_open_at_their_edges():
    """``min <= x < max`` exactly (the schema's rule; a ``<=`` at the upper edge survived every test):
    on counts, ``max: 2`` keeps 0 and 1 (the selection's no_pileup_out); NaN fails; a region and its
    outside split the finite values with no overlap at the edges."""
    from na64reco.selection.cuts import cut_mask, outside_mask
    from na64reco.selection.schema import Cut, Region

    counts = ak.Array({"n_extra_planes_out": np.array([0, 1, 2, 3])})
    cut = Cut("no_pileup_out", "range", "n_extra_planes_out", max=2)
    assert cut_mask(counts, cut).tolist() == [True, True, False, False]
    x = ak.Array({"p_out": np.array([79.999, 80.0, 80.001, 120.0, np.nan])})
    assert cut_mask(x, Cut("c", "range", "p_out", min=80.0, max=120.0)).tolist() == [False, True, True, False, False]
    mods = ak.Array({"hcal_module_energy": np.array([[0.5, 4.9], [0.5, 5.0], [0.4999, 1.0]])})
    each = Cut("hcal_mip", "each_in_range", "hcal_module_energy", min=0.5, max=5.0)
    assert cut_mask(mods, each).tolist() == [True, False, False]
    region = Region("box", "p_out", None, 80.0)
    inside, outside = region_mask(x, region), outside_mask(x, region)
    assert inside.tolist() == [True, False, False, False, False]
    assert not np.any(inside & outside) and (inside | outside).tolist() == [True, True, True, True, False]
    # a region's lower edge is inside it, not provably outside (a < there, not <=: an event exactly at the
    # edge of a protected region with a minimum would be shown; mutation review, stop 48)
    lower = Region("control", "p_out", 80.0, 120.0)
    assert region_mask(x, lower).tolist() == [False, True, True, False, False]
    assert outside_mask(x, lower).tolist() == [True, False, False, True, False]
