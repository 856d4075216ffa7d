"""The library's layers point one way (README "Layout", STYLE.md): a module imports only from
lower layers or from its own package.  Every import of ``na64reco`` / ``processors`` in the
source counts, also those inside functions (a lazy import is still a dependency).

A new top-level module or package must be placed in :data:`LAYERS`; the test names it if not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first.  Within a layer, two packages do not import each other.
LAYERS: list[set[str]] = [
    {"__init__", "units", "errors", "job_defaults", "summary", "as_loaded"},
    {"config", "constants", "atomic", "resources", "exposure", "hists", "pulse", "material"},
    {"setup_document"},
    {"geometry", "physics", "bad_spills"},
    {"conditions", "datasets"},
    {"io"},
    {"sim", "reco", "stats", "file_check"},
    {"selection", "file_check_cache"},
    {"export", "plotting", "dqm", "calibration", "processors", "background", "dask_worker"},
    {"worker_notes"},
    {"display", "dqm_plots", "runner", "plot_worker"},
    {"efficiency", "campaign", "unblinding"},
    {"commands", "cli", "_forkserver_preload"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """The top-level unit of a dotted module name: ``na64reco.reco.calo`` -> ``reco``,
    ``processors.base`` -> ``processors``, ``na64reco`` -> ``__init__``."""
    parts = module.split(".")
    if parts[0] == "processors":
        return "processors"
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(line, imported module) of every absolute import of the project's packages in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "na64reco":
                targets = [f"na64reco.{a.name}" for a in node.names]
            else:
                targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t == "na64reco" or t.startswith(("na64reco.", "processors")):
                yield node.lineno, t


def _sources():
    return sorted([*(ROOT / "na64reco").rglob("*.py"), *(ROOT / "processors").rglob("*.py")])


def violations(sources=None, root: Path = ROOT) -> list[str]:
    out = []
    for path in sources if sources is not None else _sources():
        src = _unit(_module_name(path, root))
        name = path.relative_to(root)
        if src not in RANK:
            out.append(f"{name}: unit {src!r} is in no layer of tests/test_layers.py")
            continue
        for line, target in _imports(path):
            dst = _unit(target)
            if dst == src or dst == "__version__":
                continue
            if dst not in RANK:
                out.append(f"{name}:{line}: imports {target} (unit {dst!r} is in no layer)")
            elif RANK[dst] >= RANK[src]:
                out.append(f"{name}:{line}: {src} (layer {RANK[src]}) imports {target} "
                           f"(layer {RANK[dst]}): only lower layers may be imported")
    return out


def test_every_import_points_down_the_layers():
    bad = violations()
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_check_finds_an_upward_and_a_sideways_import(tmp_path):
    """The check itself: a reco module importing the runner (up) and the simulation (same
    layer) is caught, with file, line and layers in the message."""
    pkg = tmp_path / "na64reco" / "reco"
    pkg.mkdir(parents=True)
    bad = pkg / "leaky.py"
    bad.write_text("import numpy\n\n\ndef f():\n    from na64reco.runner import run_files\n"
                   "    from na64reco.sim import generate\n    from na64reco.io.raw import open_raw\n")
    found = violations([bad], root=tmp_path)
    assert len(found) == 2
    r = RANK["reco"]
    assert f"na64reco/reco/leaky.py:5: reco (layer {r}) imports na64reco.runner (layer {RANK['runner']})" in found[0]
    assert f"na64reco/reco/leaky.py:6: reco (layer {r}) imports na64reco.sim (layer {r})" in found[1]
    (tmp_path / "na64reco" / "newstuff.py").write_text("")
    assert violations([tmp_path / "na64reco" / "newstuff.py"], root=tmp_path) == [
        "na64reco/newstuff.py: unit 'newstuff' is in no layer of tests/test_layers.py"]
