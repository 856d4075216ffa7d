"""na64reco.hists.HistSums against its reference twin: booking a ``hist.Hist`` per chunk,
filling it with boost-histogram and merging the chunks as coffea does (``a + b``, then
``+=``).  Same bins, flow bins included, to the last bit."""

from __future__ import annotations

import boost_histogram as bh
import hist
import numpy as np
import pytest
from coffea.processor.accumulator import accumulate

from na64reco.errors import NA64Error
from na64reco.hists import HistGroup, HistSums, HistTemplate, to_hists


def _book(kind: str) -> hist.Hist:
    stage = hist.axis.StrCategory(["all", "selected"], name="stage")
    axes = {
        "regular": [stage, hist.axis.Regular(20, 0.0, 10.0, name="x")],
        "modules": [stage, hist.axis.Integer(0, 4, name="module"), hist.axis.Regular(10, 0.0, 0.1, name="e")],
        "pair": [stage, hist.axis.Regular(12, 0.0, 6.0, name="x"), hist.axis.Regular(8, -1.0, 30.0, name="y")],
        "count": [stage, hist.axis.Integer(0, 6, name="n")],
        "nostage": [hist.axis.Regular(30, 0.0, 240.0, name="p")],
    }[kind]
    return hist.Hist(*axes, storage=hist.storage.Weight())


def _values(kind: str, n: int, rng) -> list[np.ndarray]:
    """Values with what a chunk can hold: NaN, infinities, bin edges, out of range."""
    def floats(lo, hi):
        x = rng.uniform(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo), n)
        special = rng.integers(0, 6, n)
        x[special == 0] = np.nan
        x[special == 1] = np.inf * rng.choice([-1, 1], n)[special == 1]
        x[special == 2] = np.linspace(lo, hi, 7)[rng.integers(0, 7, n)][special == 2]  # edges
        return x

    if kind == "regular":
        return [floats(0.0, 10.0)]
    if kind == "modules":
        e = floats(0.0, 0.1).reshape(-1, 1) * np.ones(4)
        return [np.broadcast_to(np.arange(4), e.shape).ravel(), e.ravel()]
    if kind == "pair":
        return [floats(0.0, 6.0), floats(-1.0, 30.0)]
    if kind == "count":
        return [rng.integers(-2, 9, n)]
    return [floats(0.0, 240.0)]


@pytest.mark.parametrize("kind", ["regular", "modules", "pair", "count", "nostage"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sums_give_the_histograms_of_booking_and_filling_every_chunk(kind, weighted):
    rng = np.random.default_rng(11)
    template = HistTemplate(_book(kind))
    booked, summed = [], []
    for n in (0, 1, 37, 940, 5):  # chunks, one of them empty
        values = _values(kind, n, rng)
        size = len(values[-1])
        w = rng.exponential(1.0, size) if weighted else np.ones(size)
        passed = rng.random(size) < 0.3
        h, s = _book(kind), HistSums(template)
        if kind == "nostage":
            bh.Histogram.fill(h, *values, weight=w)
            s.fill(*values, weight=w)
        else:
            for stage, m in (("all", slice(None)), ("selected", passed)):
                bh.Histogram.fill(h, stage, *[v[m] for v in values], weight=w[m])
                s.fill(stage, *[v[m] for v in values], weight=w[m])
        booked.append({"h": h})
        summed.append({"h": s})
    ref = accumulate(booked)["h"]
    got = accumulate(summed)["h"].to_hist()
    assert type(got) is type(ref) and got.axes == ref.axes
    for field in ("value", "variance"):
        a, b = getattr(ref.view(flow=True), field), getattr(got.view(flow=True), field)
        assert a.tobytes() == b.tobytes(), field
    assert template.hist.sum(flow=True).value == 0  # the shared template is never filled


def test_merging_other_axes_is_an_error_and_hists_pass_through():
    a, b = HistSums(HistTemplate(_book("regular"))), HistSums(HistTemplate(_book("pair")))
    with pytest.raises(NA64Error, match="different axes"):
        a + b
    h = _book("count")
    out = to_hists({"s": a, "h": h})
    assert out["h"] is h and isinstance(out["s"], hist.Hist)


def test_sums_survive_pickling_without_the_templates_storage():
    import pickle

    template = HistTemplate(_book("pair"))
    s = HistSums(template)
    s.fill("all", np.array([1.0, 2.0]), np.array([3.0, 40.0]), weight=np.array([0.5, 2.0]))
    back = pickle.loads(pickle.dumps(s))
    assert len(pickle.dumps(back.template)) < 0.1 * len(pickle.dumps(template.hist))
    merged = back + s
    assert merged.to_hist().axes == template.hist.axes
    assert np.array_equal(merged.sumw, 2 * s.sumw) and np.array_equal(merged.sumw2, 2 * s.sumw2)


def test_unpickled_sums_share_one_template_per_axes():
    """A process unpickling many chunks' sums books each template once (the same object for
    the same axes, pickled anywhere); other axes, another storage or another label are other
    templates; the cache of unpickled templates stays bounded."""
    import pickle

    import na64reco.hists as hists_module

    s = HistSums(HistTemplate(_book("pair")))
    s.fill("all", np.array([1.0, 2.0]), np.array([3.0, 40.0]), weight=np.array([0.5, 2.0]))
    again = HistSums(HistTemplate(_book("pair")))  # booked elsewhere: the same axes
    a, b, c = pickle.loads(pickle.dumps(s)), pickle.loads(pickle.dumps(s)), pickle.loads(pickle.dumps(again))
    assert a.template is b.template is c.template
    assert pickle.loads(pickle.dumps(a)).template is a.template  # (pickled again from an unpickled one)
    assert np.array_equal((a + b).sumw, 2 * s.sumw) and (a + c).to_hist().axes == s.template.hist.axes
    relabelled = _book("pair")
    relabelled.axes[1].label = "other"
    others = [HistTemplate(_book("count")), HistTemplate(relabelled),
              HistTemplate(hist.Hist(*_book("pair").axes, storage=hist.storage.Double()))]
    for t in others:
        back = pickle.loads(pickle.dumps(HistSums(t))).template
        assert back is not a.template and back.hist.axes == t.hist.axes
        assert type(back.hist.storage_type()) is type(t.hist.storage_type())
    old = hists_module._MAX_UNPICKLED
    hists_module._MAX_UNPICKLED = 2
    try:
        for n in (101, 102, 103):  # axes not unpickled before
            pickle.loads(pickle.dumps(HistSums(HistTemplate(hist.Hist(hist.axis.Regular(n, 0.0, 1.0, name="x"),
                                                                       storage=hist.storage.Weight())))))
        assert len(hists_module._UNPICKLED) == 2
    finally:
        hists_module._MAX_UNPICKLED = old


def test_a_group_merges_as_coffea_merges_a_dict_of_sums():
    """Chunks with different histogram names (a name missing in some chunks): the group's
    merge gives what coffea's accumulation of plain dicts of the same sums gives."""
    rng = np.random.default_rng(5)
    templates = {k: HistTemplate(_book(k)) for k in ("regular", "pair", "count")}
    chunks = []
    for names in (("regular", "pair"), ("pair", "count"), ("regular", "pair", "count"), ("count",)):
        sums = {}
        for k in names:
            s = HistSums(templates[k])
            values = _values(k, 50, rng)
            s.fill("all", *values, weight=rng.exponential(1.0, len(values[-1])))
            sums[k] = s
        chunks.append(sums)
    copies = [{k: HistSums(v.template, v.sumw.copy(), v.sumw2.copy()) for k, v in c.items()} for c in chunks]
    ref = to_hists(accumulate({"g": c} for c in copies)["g"])
    got = to_hists(accumulate({"g": HistGroup(c)} for c in chunks)["g"])
    assert list(got) == list(ref) == ["regular", "pair", "count"]
    for k in ref:
        assert got[k].view(flow=True).value.tobytes() == ref[k].view(flow=True).value.tobytes()
        assert got[k].view(flow=True).variance.tobytes() == ref[k].view(flow=True).variance.tobytes()
