"""Single-bit corruption: every flip either fails with one line naming the file, or
changes nothing.  Zero silent changes (issue: a flipped bit in ``spills`` once turned
3000 MOT into 35768)."""

from __future__ import annotations

import numpy as np
import pytest
from bitflip import classify, draw_flips, flipped_copy, regions, result_of

from na64reco.runner import RunOptions, run_files
from na64reco.sim.generate import simulate


def _run(path):
    return run_files({"d": [str(path)]}, RunOptions("na64mu_invisible", status=False, chunksize=400))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    src = tmp_path_factory.mktemp("flips") / "clean.root"
    simulate("na64mu", 40_000, 7, 1001, src, chunk_size=10_000)  # ~400 triggered events, 4 checksum blocks
    kind, result = result_of(src, _run)
    assert kind == "result"
    return src, result


def test_every_tree_and_the_metadata_are_flip_targets(clean):
    names = set(regions(clean[0]))
    for tree in ("events", "spills", "truth"):
        assert f"{tree} baskets" in names and f"{tree} header" in names
    assert {"metadata", "checksum table", "rest of file"} <= names


def test_single_bit_flips_never_change_a_result_silently(clean, tmp_path):
    src, reference = clean
    flips = draw_flips(src, 2, np.random.default_rng(20261129))
    outcomes = {}
    for i, (region, bit) in enumerate(flips):
        dst = flipped_copy(src, tmp_path / f"flip{i}.root", bit)
        kind, value = result_of(dst, _run)
        outcomes[(region, bit)] = classify(kind, value, dst, reference), value
    bad = {k: v for k, v in outcomes.items() if v[0] not in ("error", "identical")}
    assert not bad, bad
    # the content flips are caught, not merely harmless
    for region in ("events baskets", "truth baskets", "metadata", "checksum table"):
        assert any(o == "error" for (r, _), (o, _) in outcomes.items() if r == region), region


def test_a_flip_in_the_spills_content_is_an_error_not_a_different_mot(clean, tmp_path):
    """Flip every bit of the stored n_beam values: each read fails (checksum), none changes the MOT."""
    import uproot

    from na64reco.errors import RawFormatError
    from na64reco.io.raw import open_raw

    src = clean[0]
    with uproot.open(src) as f:
        branch = f["spills"]["n_beam"]
        seek, size = int(branch.member("fBasketSeek")[0]), int(branch.member("fBasketBytes")[0])
        key_len = int(branch.basket(0).member("fKeylen"))
    n_errors = 0
    for byte in range(seek + key_len, seek + size):
        for bit in range(0, 8, 3):
            dst = flipped_copy(src, tmp_path / "spills.root", byte * 8 + bit)
            try:
                with open_raw(dst) as raw:
                    assert raw.spills()["n_beam"].sum() == 40_000
            except RawFormatError as exc:
                assert str(dst) in str(exc)
                n_errors += 1
    assert n_errors > 0


def test_verify_command_names_the_bad_file_and_exits_1(clean, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import uproot

    src = clean[0]
    with uproot.open(src) as f:
        seek = int(f["events"]["calo_adc"].member("fBasketSeek")[0])
    bad = flipped_copy(src, tmp_path / "bad.root", (seek + 300) * 8 + 5)
    exe = Path(sys.executable).with_name("na64reco")
    proc = subprocess.run([str(exe), "verify", str(src), str(bad)], capture_output=True, text=True,
                          env=os.environ, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"{src}: ok (events ")
    assert lines[1].startswith(f"{bad}: BAD: ") and "tree 'events'" in lines[1]
    ok = subprocess.run([str(exe), "verify", str(src)], capture_output=True, text=True, env=os.environ, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def _uproot_view(path) -> str:
    """What uproot itself (tree headers included) reads of every tree, or the error it raises."""
    import json

    import uproot

    try:
        with uproot.open(path) as f:
            return json.dumps({t: {k: np.asarray(v).tolist() for k, v in f[t].arrays(library="np").items()}
                               for t in ("spills", "events")}, default=str)
    except Exception as exc:  # noqa: BLE001  (any failure of the independent reader)
        return f"error: {type(exc).__name__}"


def test_verify_reads_the_tree_headers_as_any_other_reader_must(clean, tmp_path):
    """A local read takes the baskets from the file's basket map and never needed the TTree headers, so
    `verify` passed a file whose spills header said 65537 entries, which uproot, ROOT or a URL read refuse
    (integrity review, stop 48: 53 of 217 flips in that header).  Wherever uproot's own reading changes,
    verify must fail."""
    from na64reco.errors import RawFormatError
    from na64reco.io.raw import open_raw

    src = clean[0]
    reference = _uproot_view(src)
    spans = {r: s for r, s in regions(src).items() if r in ("spills header", "events header")}
    rng = np.random.default_rng(48)
    changed = caught = 0
    for region, (a, b) in ((r, s) for r, ss in spans.items() for s in ss):
        for byte in rng.choice(np.arange(a, b), size=min(40, b - a), replace=False):
            dst = flipped_copy(src, tmp_path / "header.root", int(byte) * 8 + int(rng.integers(8)))
            if _uproot_view(dst) == reference:
                continue
            changed += 1
            try:
                with open_raw(dst) as raw:
                    raw.verify()
            except RawFormatError as exc:
                assert str(dst) in str(exc)
                caught += 1
            else:
                pytest.fail(f"{region}: byte {byte}: uproot reads the file otherwise, verify passes it")
    assert changed > 0 and caught == changed
