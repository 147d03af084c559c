"""The model registry: a model's name -> :class:`ModelSpec`, which knows how to run one LOSO fold.

A model module (``mecore/models/mesnet.py``, ...) defines a fold function and calls
:func:`register` at import; its module name goes into :data:`MODEL_MODULES` so that
:func:`get_model` and :func:`available_models` import it. The LOSO runner (:mod:`mecore.loso`)
needs nothing else from a model.

A fold function receives a :class:`LosoFold` (the dataset, the left-out subject, the training
subjects, the configuration, a working folder for checkpoints) and returns a predictions
DataFrame for the left-out subject:

* ``task="recognition"``: one row per test clip with ``video``, ``label`` (true class) and
  ``prediction`` (predicted class); extra columns (class scores) are kept.
* ``task="spotting"``: one row per spotted interval with ``video``, ``onset``, ``offset``
  (inclusive frame numbers), ``type`` ("micro"/"macro") and optionally ``score``.

A model module, in outline::

    from mecore.config import Config, cite
    from mecore.models import LosoFold, ModelSpec, register

    def run_fold(fold: LosoFold) -> pd.DataFrame:  # module level, so that Dask workers can import it
        ...  # inputs of fold.train_rows, fit(..., checkpoint_dir=fold.workdir, resume=fold.resume),
        ...  # score the clips or videos of fold.test_subject, post-process, return the table

    PAPER = Config({"input": {...}, "train": {"lr": cite(1e-4, "Sec. IV-A"), ...}, "test": {...}, "run": {...}})
    register(ModelSpec(name="mesnet", task="spotting", paper="Wang et al. 2021", run_fold=run_fold,
                       configs={"paper": PAPER, "default": PAPER.set({"train.epochs": 10}), ...},
                       spotting_convention="mesnet"))

Every configuration has :data:`REQUIRED_KEYS` (``input.max_fps``, ``trial.max_steps``, ``run.repeats``):
the entries the LOSO runner itself sets or reads (:mod:`mecore.config` explains the groups).
"""
from __future__ import annotations

import importlib
import hashlib
import inspect
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import pandas as pd

from mecore.config import Config
from mecore.data.dataset import Dataset, dataset_family
from mecore.paths import PROFILES

# Modules whose import registers models; add a module here when its model is written.
MODEL_MODULES: tuple[str, ...] = ("mecore.models.classical", "mecore.models.yap3dcnn", "mecore.models.mesnet",
                                  "mecore.models.bifpn_i3d", "mecore.models.stsnet", "mecore.models.fr")

TASKS = ("recognition", "spotting")
REQUIRED_KEYS = ("input.max_fps", "trial.max_steps", "run.repeats")
CHECKPOINT_NAME = "checkpoint.pt"  # as mecore.train writes it
_REGISTRY: dict[str, "ModelSpec"] = {}


class UnknownModelError(LookupError):
    """No model of that name; the message lists the models that exist."""


@dataclass
class LosoFold:
    """What a fold function gets: train on ``train_subjects``, predict ``test_subject``.

    ``workdir`` is this fold's own folder (checkpoints go there); ``resume`` is passed on to
    :func:`mecore.train.fit`; ``seed`` has already seeded the global generators.
    """

    dataset: Dataset
    test_subject: str
    train_subjects: list[str]
    config: Config
    workdir: Path
    seed: int = 0
    resume: bool | Literal["auto"] = "auto"
    progress: bool = False

    @property
    def train_rows(self) -> pd.DataFrame:
        """Annotation rows of the training subjects."""
        annotations = self.dataset.annotations
        return annotations[annotations["subject"].isin(self.train_subjects)]

    @property
    def train_videos(self) -> list[str]:
        """Every video of the training subjects, annotated or not, sorted."""
        return sorted(name for name, video in self.dataset.videos.items() if video.subject in self.train_subjects)

    @property
    def test_rows(self) -> pd.DataFrame:
        """Annotation rows of the left-out subject."""
        annotations = self.dataset.annotations
        return annotations[annotations["subject"] == self.test_subject]

    @property
    def test_videos(self) -> list[str]:
        """Every video of the left-out subject, annotated or not (spotting scores them all); when the dataset
        carries ``spot_videos`` (:func:`mecore.spot.spot`), those instead: the fold's model spots them."""
        if self.dataset.spot_videos:
            return sorted(self.dataset.spot_videos)
        return sorted(name for name, video in self.dataset.videos.items() if video.subject == self.test_subject)

    def at_most_fps(self) -> LosoFold:
        """This fold on its dataset read at no more than ``config.input.max_fps`` frames per second (if set)."""
        return replace(self, dataset=self.dataset.at_most_fps(self.config.input.max_fps))


def fold_checkpoints(fold: LosoFold) -> list[Path]:
    """Where most models keep a finished fold's weights: ``checkpoint.pt`` in the fold's ``workdir``."""
    return [fold.workdir / CHECKPOINT_NAME]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    ``configs`` maps a profile (``smoke``, ``default``, ``large``, ``paper``) to the model's :class:`Config`,
    which the fold function reads and which keys the LOSO results folder. ``dataset_overrides`` maps a profile
    to ``{dataset family: {"group.key": value}}``, the papers' per-dataset settings (``samm_lv`` covers
    ``samm_lv`` and ``synth_samm_lv``): the one place a dataset changes a configuration.
    ``spotting_convention`` names the :mod:`mecore.metrics` convention of the model's paper (spotting models
    only). ``checkpoints(fold)`` lists the files a finished fold reloads (``mecore spot`` checks them before any
    work); ``code_version`` hashes the module that defines ``run_fold`` and enters every run key.
    ``prepare(dataset, config, video)``, where a model has one, computes the cache entries its folds read of one
    video (face crops, flows): :func:`mecore.loso.run_loso` runs it once per video, spread over the workers,
    before the folds, so that folds running side by side never compute one entry twice.
    """

    name: str
    task: Literal["recognition", "spotting"]
    paper: str
    run_fold: Callable[[LosoFold], pd.DataFrame]
    configs: Mapping[str, Config] = field(default_factory=dict)
    spotting_convention: str | None = None
    dataset_overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    checkpoints: Callable[[LosoFold], list[Path]] = fold_checkpoints
    prepare: Callable[[Dataset, Config, str], Any] | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        unknown = set(self.configs) - set(PROFILES)
        if unknown:
            raise ValueError(f"model {self.name!r}: configs for unknown profiles {sorted(unknown)}")
        for profile, config in self.configs.items():
            if not isinstance(config, Config):
                raise TypeError(f"model {self.name!r}: the {profile!r} configuration must be a mecore.config.Config")
            missing = [key for key in REQUIRED_KEYS if config.get_path(key, KeyError) is KeyError]
            if missing:
                raise ValueError(f"model {self.name!r}: the {profile!r} configuration lacks {missing}")
            for family, changes in self.dataset_overrides.get(profile, {}).items():
                config.set(changes)  # an override of an unknown key fails at import, not in a run

    def config(self, profile: str, dataset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
        """The configuration of ``profile`` (on ``dataset``, with its family's overrides, then ``overrides``:
        ``{"group.key": value}``, checked); raises naming the profiles the model has."""
        if profile not in self.configs:
            raise ValueError(f"model {self.name!r} has no {profile!r} configuration; "
                             f"it has {sorted(self.configs) or 'none'}")
        family = self.dataset_overrides.get(profile, {}).get(dataset_family(dataset), {}) if dataset else {}
        return self.configs[profile].set({**family, **(overrides or {})})

    @cached_property
    def code_version(self) -> str:
        """12 hex digits of the SHA-256 of the source file of the module that defines ``run_fold`` (of the function
        it wraps, for a ``functools.wraps`` wrapper)."""
        source = Path(inspect.getsourcefile(inspect.unwrap(self.run_fold))).read_bytes()
        return hashlib.sha256(source).hexdigest()[:12]


def count_parameters(model) -> int:
    """Number of parameters of a torch module (every model module reports its sizes with it)."""
    return sum(p.numel() for p in model.parameters())


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (registering the same spec again is harmless)."""
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"a different model is already registered as {spec.name!r}")
    _REGISTRY[spec.name] = spec
    return spec


def available_models() -> list[str]:
    """Names of all registered models, after importing :data:`MODEL_MODULES`."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return sorted(_REGISTRY)


def get_model(name: str) -> ModelSpec:
    """The spec registered as ``name``; the error lists the models that exist."""
    names = available_models()
    if name not in _REGISTRY:
        listing = ", ".join(names) if names else "none yet (no model module is registered in mecore.models)"
        raise UnknownModelError(f"unknown model {name!r}; available models: {listing}")
    return _REGISTRY[name]
