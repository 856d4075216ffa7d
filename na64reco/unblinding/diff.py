"""Differences between a frozen analysis state and the current one, each named."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    """One way the current state differs from the frozen one."""

    what: str      # processor, selection, calibration, code, file list, file content
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        return f"{self.what} changed: {self.message}" + ("" if self.blocking else " (not blocking)")


def _short(h: str | None) -> str:
    return (h or "none")[:12]


def diff_states(frozen: dict, current: dict) -> list[Difference]:
    """Every difference between two analysis states, most important first."""
    out: list[Difference] = []
    fp, cp = frozen["processor"], current["processor"]
    for key in ("name", "setup", "options"):
        if fp.get(key) != cp.get(key):
            out.append(Difference("processor", f"{key} {fp.get(key)!r} -> {cp.get(key)!r}"))

    fs, cs = frozen["selection"], current["selection"]
    if fs["path"] != cs["path"]:
        out.append(Difference("selection", f"file {fs['path']} -> {cs['path']}"))
    if fs["sha256"] != cs["sha256"]:
        out.append(Difference("selection", f"{cs['path']} content sha256 {_short(fs['sha256'])} -> "
                                           f"{_short(cs['sha256'])}"))

    fc, cc = frozen["calibration"], current["calibration"]
    for key, label in (("tag", "tag"), ("root", "calibration directory"), ("setup", "setup")):
        if fc[key] != cc[key]:
            out.append(Difference("calibration", f"{label} {fc[key]!r} -> {cc[key]!r}"))
    if fc["tag_sha256"] != cc["tag_sha256"]:
        out.append(Difference("calibration", f"tag file of {cc['tag']!r} was edited "
                                             f"({_short(fc['tag_sha256'])} -> {_short(cc['tag_sha256'])})"))
    if fc["setup_sha256"] != cc["setup_sha256"]:
        out.append(Difference("calibration", f"detector setup file setups/{cc['setup']}.yaml was edited"))
    for rel in sorted(set(fc["conditions"]) | set(cc["conditions"])):
        a, b = fc["conditions"].get(rel), cc["conditions"].get(rel)
        if a is None:
            out.append(Difference("calibration", f"conditions file {rel} added to the tag"))
        elif b is None:
            out.append(Difference("calibration", f"conditions file {rel} removed from the tag"))
        elif a != b:
            out.append(Difference("calibration", f"conditions file {rel} was edited "
                                                 f"({_short(a)} -> {_short(b)})"))

    fk, ck = frozen["code"], current["code"]
    if fk["version"] != ck["version"]:
        out.append(Difference("code", f"na64reco version {fk['version']} -> {ck['version']}"))
    if fk["source_sha256"] != ck["source_sha256"]:
        ff, cf = fk["source_files"], ck["source_files"]
        parts = [f"{p} modified" for p in sorted(set(ff) & set(cf)) if ff[p] != cf[p]]
        parts += [f"{p} added" for p in sorted(set(cf) - set(ff))]
        parts += [f"{p} removed" for p in sorted(set(ff) - set(cf))]
        out.append(Difference("code", "source " + ", ".join(parts)))
    elif fk.get("git_commit") != ck.get("git_commit"):
        # identical library/processor sources: only files outside the analysis code moved
        out.append(Difference("code", f"git commit {_short(fk.get('git_commit'))} -> "
                                      f"{_short(ck.get('git_commit'))} with identical analysis "
                                      "sources", blocking=False))

    fb, cb = frozen.get("bad_spills"), current.get("bad_spills")
    if (fb or {}).get("path") != (cb or {}).get("path"):
        out.append(Difference("bad-spill list", f"{(fb or {}).get('path')} -> {(cb or {}).get('path')}"))
    elif fb and fb["sha256"] != cb["sha256"]:
        now = "is missing" if cb["sha256"] is None else f"was edited ({_short(fb['sha256'])} -> {_short(cb['sha256'])})"
        out.append(Difference("bad-spill list", f"{fb['path']} {now}"))

    ff = {f["path"]: f for f in frozen["files"]}
    cf = {f["path"]: f for f in current["files"]}
    added, removed = sorted(set(cf) - set(ff)), sorted(set(ff) - set(cf))
    if added or removed:
        msg = "; ".join([f"added {p}" for p in added] + [f"removed {p}" for p in removed])
        out.append(Difference("file list", msg))
    for p in sorted(set(ff) & set(cf)):
        a, b = ff[p], cf[p]
        if a["size"] != b["size"] or a["sha256"] != b["sha256"]:
            out.append(Difference("file content", f"{p}: size {a['size']} -> {b['size']} bytes, "
                                                  f"sha256 {_short(a['sha256'])} -> {_short(b['sha256'])}"))
    return out
