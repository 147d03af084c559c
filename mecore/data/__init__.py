"""Datasets: one annotation table and lazy frame access for every real layout and its synthetic twin.

``load_dataset(name, root=None)`` is the single entry point. Real names (``casme_sq``, ``samm_lv``,
``casme2``, ``samm``, ``smic_hs``, ``smic_vis``, ``smic_nir``, ``smic_e``, ``cde``) need the root of
a licensed copy. The same names prefixed with ``synth_`` load the embedded synthetic datasets
(generated on first use) through the very same loaders.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from .. import paths
from .loaders import (load_casme2, load_casme_sq, load_cde, load_samm, load_samm_lv, load_smic,
                      load_smic_e)
from .dataset import ANNOTATION_DTYPES, Dataset, DatasetError, Video, annotation_frame

LOADERS = {
    "casme_sq": load_casme_sq,
    "samm_lv": load_samm_lv,
    "casme2": load_casme2,
    "samm": load_samm,
    "smic_hs": partial(load_smic, variant="HS"),
    "smic_vis": partial(load_smic, variant="VIS"),
    "smic_nir": partial(load_smic, variant="NIR"),
    "smic_e": load_smic_e,
    "cde": load_cde,
}
# synthetic name -> the generated folder it lives in
SYNTHETIC_FOLDERS = {"casme_sq": "casme_sq", "samm_lv": "samm_lv", "casme2": "casme2", "samm": "samm",
                     "smic_hs": "smic", "smic_vis": "smic", "smic_nir": "smic", "smic_e": "smic_e", "cde": "cde"}
SYNTHETIC = {f"synth_{name}": name for name in LOADERS}
DATASET_NAMES = tuple(LOADERS) + tuple(SYNTHETIC)
LONG_VIDEO_SETS = ("casme_sq", "samm_lv", "smic_e")  # spotting datasets; the others hold expression clips


def dataset_kind(name: str) -> str:
    """``"spotting"`` (long videos) or ``"recognition"`` (clips) for a dataset name, real or ``synth_``."""
    return "spotting" if SYNTHETIC.get(name, name) in LONG_VIDEO_SETS else "recognition"


def load_dataset(name: str, root: str | Path | None = None, profile: str | None = None,
                 annotations_only: bool = False, **options) -> Dataset:
    """Load a dataset by name.

    ``root``: the folder of a real copy (required for real names). For ``synth_*`` names it
    defaults to the embedded synthetic set of ``profile`` (``$MECORE_PROFILE``, else ``default``),
    which is generated if absent. ``options`` go to the loader (e.g. ``frames_dir``, ``workbook`` to read
    another annotation workbook than the newest release found, ``component_roots`` for ``cde``).
    """
    if name in SYNTHETIC:
        real = SYNTHETIC[name]
        if root is None:
            from .synthetic import ensure_synthetic

            needed = ("casme2", "samm", "smic", "cde") if real == "cde" else (SYNTHETIC_FOLDERS[real],)
            root = ensure_synthetic(profile, datasets=needed) / SYNTHETIC_FOLDERS[real]
        return LOADERS[real](root, annotations_only=annotations_only, name=name, **options)
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if root is None:
        raise DatasetError(f"dataset {name!r} is licensed and not shipped: pass root=<folder of your copy> "
                           f"(or use 'synth_{name}' for the embedded synthetic twin)")
    return LOADERS[name](root, annotations_only=annotations_only, name=name, **options)


__all__ = ["ANNOTATION_DTYPES", "DATASET_NAMES", "dataset_kind", "Dataset", "DatasetError", "Video", "annotation_frame",
           "load_dataset"]
