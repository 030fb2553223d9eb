"""Finding the peers: the original frameworks used as references by tests and benchmarks
(Detectron2 v0.6, pycocotools), which are not Debian packages (../shared/peers/README.md).

Order, as a user's machine would have them: already importable (e.g. ``pip install
detectron2``); else the folder named by the environment variable ``RCNN_PEERS_PYTHON``; else
``<repo>/../shared/peers/python``. When a peer is absent, a test skips with one line, except
when ``RCNN_REQUIRE_PEERS=1`` (set by ``.ci/run``), where its absence is a failure."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_PATH = "RCNN_PEERS_PYTHON"
ENV_REQUIRE = "RCNN_REQUIRE_PEERS"


def candidate_dirs() -> list[str]:
    """Folders tried, in order, when a peer is not importable as it is."""
    dirs = []
    if os.environ.get(ENV_PATH):
        dirs.append(os.environ[ENV_PATH])
    dirs.append(os.path.join(os.path.dirname(ROOT), "shared", "peers", "python"))
    return dirs


def required() -> bool:
    """True when a missing peer must fail the run (CI) instead of skipping."""
    return os.environ.get(ENV_REQUIRE, "") not in ("", "0")


def find(module: str) -> Optional[str]:
    """Makes ``module`` importable if it can be found; returns None when it is importable, or
    a one-line reason why it is not (to print when skipping)."""
    try:
        importlib.import_module(module)
        return None
    except ImportError:
        pass
    tried = []
    for d in candidate_dirs():
        tried.append(d)
        if not os.path.isdir(d):
            continue
        if d not in sys.path:
            sys.path.insert(0, d)
        try:
            importlib.invalidate_caches()
            importlib.import_module(module)
            return None
        except ImportError as e:
            return f"{module} found under {d} but does not import: {e}"
    return (f"{module} is not importable, ${ENV_PATH} is unset or lacks it, and "
            f"{tried[-1]} does not exist (../shared/peers/README.md)")


def require_or_skip(module: str, skip) -> None:
    """For unittest: ``require_or_skip("detectron2", self.skipTest)``. Raises when the peer is
    absent and RCNN_REQUIRE_PEERS is set; otherwise calls ``skip(reason)``."""
    reason = find(module)
    if reason is None:
        return
    if required():
        raise RuntimeError(f"{reason}; {ENV_REQUIRE}=1 makes this a failure")
    skip(f"skipped: {reason}")
