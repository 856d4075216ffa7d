"""Where the project's data directories (``calib/``, ``selections/``) are found.

From a checkout (editable install) they sit beside the ``na64reco`` package; in a
wheel they are carried inside it as ``na64reco/_data/``.  The environment variables
``NA64RECO_CALIB`` and ``NA64RECO_SELECTIONS`` override both, except for what
:func:`package_selections_dir` and :func:`package_calib_dir` serve: the blinding's protected
regions, and the reference reconstruction that decides them, always come from the installed
package.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str, env: str | None) -> Path:
    if env and os.environ.get(env):
        path = Path(os.environ[env])
        if not path.is_dir():
            raise FileNotFoundError(f"{env}={path} is not a directory")
        return path
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the {name}/ directory: looked in {_PACKAGE / '_data' / name} (wheel) and "
        f"{_PACKAGE.parent / name} (checkout)" + (f"; set {env} to point at it" if env else "")
    )


def calib_dir() -> Path:
    """Directory holding setups, conditions and tags."""
    return _data_dir("calib", "NA64RECO_CALIB")


def selections_dir() -> Path:
    """Directory holding the cut-flow definitions."""
    return _data_dir("selections", "NA64RECO_SELECTIONS")


def package_calib_dir() -> Path:
    """The ``calib/`` directory of the installed package (``NA64RECO_CALIB`` ignored): the
    reference setups and conditions of the blinding (:mod:`na64reco.selection.blinding`)."""
    return _data_dir("calib", None)


def package_selections_dir() -> Path:
    """The ``selections/`` directory of the installed package (``NA64RECO_SELECTIONS`` ignored)."""
    return _data_dir("selections", None)
