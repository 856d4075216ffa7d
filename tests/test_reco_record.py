"""na64reco.reco.event.record: the reco record built as one RecordArray is what
``ak.zip(fields, depth_limit=1)`` gives (form, values, vector behaviour)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from na64reco.reco.event import record
from na64reco.reco.kinematics import VECTOR_NAME  # (registers vector's awkward behaviour)


def _fields(n: int, rng) -> dict:
    x = rng.normal(size=n)
    x[::7] = np.nan
    vec = ak.mask(ak.zip({"px": rng.normal(size=n), "py": rng.normal(size=n), "pz": 100 + rng.normal(size=n),
                          "mass": np.full(n, 0.1057)}, with_name=VECTOR_NAME), rng.random(n) < 0.8)
    return {
        "run": np.full(n, 1001, np.int32), "event": np.arange(n, dtype=np.int64),
        "trigger": rng.integers(0, 8, n).astype(np.uint32), "p_out": x,
        "hcal_module_energy": ak.from_numpy(rng.random((n, 4)), regulararray=True),
        "hits": ak.unflatten(rng.random(3 * n), np.full(n, 3)),
        "mu_in": vec, "mu_out": vec[::-1],
        "sliced": rng.random(2 * n)[::2],  # a strided numpy column
    }


@pytest.mark.parametrize("n", [0, 1, 940])
def test_record_is_the_zip_of_its_fields(n):
    fields = _fields(n, np.random.default_rng(n))
    got, ref = record(fields), ak.zip(fields, depth_limit=1)
    assert got.layout.form == ref.layout.form and got.fields == ref.fields and len(got) == len(ref) == n
    assert ak.array_equal(got, ref, equal_nan=True)
    assert ak.almost_equal(got.mu_in.deltaangle(got.mu_out), ref.mu_in.deltaangle(ref.mu_out))


def test_fields_of_other_lengths_or_kinds_go_through_zip():
    with pytest.raises(ValueError):
        record({"a": np.arange(3), "b": np.arange(4)})
    two_d = {"a": np.arange(3), "m": np.ones((3, 2))}
    assert record(two_d).layout.form == ak.zip(two_d, depth_limit=1).layout.form


def test_fields_of_a_record_and_its_numeric_fields_are_those_of_awkward():
    from na64reco.io.raw import numpy_field as _numpy_field
    from na64reco.reco.event import _fields as fields_of

    rec = record(_fields(940, np.random.default_rng(3)))
    got = fields_of(rec)
    assert list(got) == rec.fields
    again = record(got)
    assert again.layout.form == rec.layout.form and ak.array_equal(again, rec, equal_nan=True)
    for name in ("run", "event", "trigger", "p_out", "sliced"):
        a, b = _numpy_field(rec, name), np.asarray(rec[name])
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    sliced = rec[5:17]  # a sliced record: its fields' buffers are views of the right entries
    assert np.array_equal(_numpy_field(sliced, "event"), np.arange(5, 17))
    masked = rec[np.arange(940) % 3 == 0]
    assert np.array_equal(_numpy_field(masked, "event"), np.arange(0, 940, 3))
    with_param = ak.with_parameter(rec, "x", 1)
    assert list(fields_of(with_param)) == rec.fields


@pytest.mark.parametrize("sizes", [[940, 5000, 0, 17], [3, 3], [1]])
def test_concatenated_records_are_those_of_awkward(sizes):
    from na64reco.reco.event import concatenate

    rng = np.random.default_rng(len(sizes))
    parts = [record(_fields(n, rng)) for n in sizes]
    parts[0] = parts[0][2:]  # (a sliced part: its fields' buffers start later)
    got, ref = concatenate(parts), ak.concatenate(parts)
    assert got.layout.form == ref.layout.form and len(got) == len(ref)
    assert ak.array_equal(got, ref, equal_nan=True)
    assert ak.almost_equal(got.mu_in.deltaangle(got.mu_out), ref.mu_in.deltaangle(ref.mu_out))
    other = [record({"a": np.arange(n, dtype=np.int32)}) for n in sizes] + [record({"a": np.arange(2.0)})]
    assert concatenate(other).layout.form == ak.concatenate(other).layout.form  # int32 + float64: awkward's
    assert ak.array_equal(concatenate(other), ak.concatenate(other))
