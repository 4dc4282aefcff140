"""Shared pytest fixtures.

Tests that need the real data in ``../shared`` (next to the repository) use the
``shared_dir`` fixture; they are skipped with a clear reason when it is absent.
Set ``QCBED_SHARED`` to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("QCBED_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Root of the shared data (``../shared``); skips the test when it is absent."""
    root = _shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"shared data not found at {root} (set QCBED_SHARED); "
                    "real-data tests need ../shared/data")
    return root


@pytest.fixture(scope="session")
def si_dlacbed_dir(shared_dir: Path) -> Path:
    """The Felix silicon D-LACBED folder ``../shared/data/si-110-dlacbed``."""
    d = shared_dir / "data" / "si-110-dlacbed"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="session")
def pyextal_dat_dir(shared_dir: Path) -> Path:
    """The PyExtal .dat examples ``../shared/data/pyextal-dat``."""
    d = shared_dir / "data" / "pyextal-dat"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="session")
def refs_dir(shared_dir: Path) -> Path:
    """Reference results ``../shared/refs`` (py4DSTEM, abTEM)."""
    d = shared_dir / "refs"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="session")
def demo_project_factory(tmp_path_factory):
    """Copies of the fast demo project (simulated once per test session).

    ``factory(accuracy=0.02)`` returns the project file of a fresh copy in a new folder;
    ``accuracy`` (``[engine] accuracy``, None: the demo's) keeps refinements short
    where a test only needs them to run.
    """
    import shutil

    from qcbed.demo import make_demo
    from qcbed.project import dumps_toml
    from qcbed.project.parse import tomllib

    src = tmp_path_factory.mktemp("demo-once") / "demo"
    make_demo(src, fast=True, executor="serial")

    def factory(accuracy: float | None = 0.02) -> Path:
        dst = tmp_path_factory.mktemp("demo-copy") / "demo"
        shutil.copytree(src, dst)
        if accuracy is not None:
            p = dst / "project.toml"
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
            raw.setdefault("engine", {})["accuracy"] = float(accuracy)
            p.write_text(dumps_toml(raw), encoding="utf-8")
        return dst / "project.toml"

    return factory
