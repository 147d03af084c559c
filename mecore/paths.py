"""Where mecore keeps generated data, caches, runs and figures, and which profile is active.

Everything generated lives under one home folder (git-ignored): the repository checkout when
mecore is installed from it in editable mode, else ``~/.cache/mecore``. ``MECORE_HOME`` overrides it.
Result files (LOSO tables, spot's outputs, the MEGC files) are written with :func:`write_atomically`.
Profiles size every job: ``smoke`` (tests, seconds), ``default`` (the main job on two CPU cores,
minutes), ``large`` (scale checks) and, for models, ``paper`` (the paper's hyperparameters, for a GPU
and real data). ``MECORE_PROFILE`` selects the profile when a caller does not name one.
"""
from __future__ import annotations

import os
from pathlib import Path

PROFILES = ("smoke", "default", "large", "paper")
DATA_PROFILES = ("smoke", "default", "large")


def home() -> Path:
    """The folder that holds ``data/``, ``cache/``, ``runs/`` and ``figures/``."""
    if os.environ.get("MECORE_HOME"):
        return Path(os.environ["MECORE_HOME"]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.home() / ".cache" / "mecore"


def profile(name: str | None = None) -> str:
    """The profile to use: ``name`` if given, else ``$MECORE_PROFILE``, else ``default``."""
    chosen = name or os.environ.get("MECORE_PROFILE") or "default"
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r}; choose one of {', '.join(PROFILES)}")
    return chosen


def data_profile(name: str | None = None) -> str:
    """The synthetic-data size for a profile (``paper`` uses the ``large`` synthetic sets)."""
    chosen = profile(name)
    return "large" if chosen == "paper" else chosen


def synthetic_root(profile_name: str | None = None) -> Path:
    return home() / "data" / "synthetic" / data_profile(profile_name)


def cache_dir() -> Path:
    return Path(os.environ.get("MECORE_CACHE", home() / "cache"))


def runs_dir() -> Path:
    return home() / "runs"


def figures_dir(profile_name: str | None = None) -> Path:
    """Where notebooks save figures: ``figures/`` (committed, shown in the README), except in the
    ``smoke`` profile (tests), whose throw-away figures go to ``runs/figures-smoke/``."""
    path = runs_dir() / "figures-smoke" if profile(profile_name) == "smoke" else home() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``; on an error (a full disk)
    the temporary file is removed and ``path`` is left as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
