"""Protocol splits: LOSO, MESNet's train/validation split, CDE, CDMER and the class regroupings.

All splits return row positions into the annotation table they were given (``numpy`` integer
arrays), so they work for any dataset loaded by :mod:`mecore.data`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dataset import DatasetError


@dataclass(frozen=True)
class Fold:
    """One fold: a name (the left-out subject, or ``fold3``), training rows and test rows."""

    name: str
    train: np.ndarray
    test: np.ndarray


def loso_splits(annotations: pd.DataFrame) -> list[Fold]:
    """Leave-one-subject-out: one fold per subject, that subject's rows as the test set.

    For the CDE composite the subjects are already prefixed by their database (``casme2/01``),
    so the same function gives the composite LOSO of FR paper Sec. 6.1.1 (68 real subjects).
    """
    subjects = annotations["subject"].astype(str).to_numpy()
    return [Fold(subject, np.flatnonzero(subjects != subject), np.flatnonzero(subjects == subject))
            for subject in sorted(set(subjects))]


def mesnet_train_val_split(annotations: pd.DataFrame, test_subject: str, seed: int = 0, ratio: float = 0.7,
                           min_train: float = 0.64, min_val: float = 0.15, reference: str = "dataset",
                           max_tries: int = 10_000) -> tuple[list[str], list[str]]:
    """MESNet Sec. IV-A-3: split the other subjects' *videos* 7:3 into training and validation,
    redrawing until the training videos hold at least 64 % and the validation videos at least 15 %
    of the micro-expressions.

    ``reference="dataset"`` takes the percentages of all MEs in the dataset, as the paper's counts
    show (37 and 9 of CAS(ME)^2's 57). On a set with few subjects the left-out subject may hold so
    many MEs that this is impossible; ``reference="fold"`` then takes them of the MEs outside the
    test subject. Returns (training videos, validation videos); raises if no draw meets the rule.
    """
    pool = annotations[annotations["subject"].astype(str) != str(test_subject)]
    videos = np.array(sorted(pool["video"].unique()))
    if len(videos) < 2:
        raise DatasetError(f"fold {test_subject!r}: fewer than two videos outside the test subject")
    me_per_video = pool[pool["type"] == "micro"].groupby("video").size().reindex(videos, fill_value=0).to_numpy()
    total = int((annotations["type"] == "micro").sum()) if reference == "dataset" else int(me_per_video.sum())
    need_train, need_val = math.ceil(min_train * total - 1e-9), math.ceil(min_val * total - 1e-9)
    n_train = int(round(ratio * len(videos)))
    n_train = min(max(n_train, 1), len(videos) - 1)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        order = rng.permutation(len(videos))
        train, val = order[:n_train], order[n_train:]
        if me_per_video[train].sum() >= need_train and me_per_video[val].sum() >= need_val:
            return sorted(videos[train].tolist()), sorted(videos[val].tolist())
    raise DatasetError(
        f"fold {test_subject!r}: no {ratio:.0%}/{1 - ratio:.0%} video split in {max_tries} draws gives "
        f">= {need_train} training and >= {need_val} validation MEs ({reference} total {total}); "
        f"try reference='fold'")


# ---- class regroupings (FR paper Tables 9, 11, 12, 13) ------------------------------------------

REGROUPINGS: dict[str, dict[str, str]] = {
    # Table 9 (CDE, MEGC 2019): happiness -> positive; surprise; the rest of the negative emotions.
    "cde3": {"happiness": "positive", "positive": "positive", "surprise": "surprise",
             **{e: "negative" for e in ("disgust", "repression", "anger", "contempt", "fear", "sadness", "negative")}},
    # Table 11 (CDMER): negative is disgust, sadness and fear only.
    "cdmer3": {"happiness": "positive", "positive": "positive", "surprise": "surprise",
               **{e: "negative" for e in ("disgust", "sadness", "fear", "negative")}},
    # Table 12 (single database, 4 classes) for CASME II and SAMM.
    "four_class": {"happiness": "positive", "surprise": "surprise", "repression": "others", "others": "others",
                   **{e: "negative" for e in ("disgust", "anger", "contempt", "fear", "sadness")}},
    # Table 13 (CASME II, 5 classes: the 247-sample version without fear and sadness).
    "casme2_5class": {e: e for e in ("repression", "happiness", "surprise", "disgust", "others")},
}


def regroup(annotations: pd.DataFrame, scheme: str) -> pd.DataFrame:
    """Relabel ``emotion`` by a scheme of :data:`REGROUPINGS`; rows whose emotion the scheme does not
    name are dropped (e.g. ``others`` under ``cde3``). The original label is kept in
    ``original_emotion`` unless it is already there."""
    if scheme not in REGROUPINGS:
        raise ValueError(f"unknown regrouping {scheme!r}; choose one of {sorted(REGROUPINGS)}")
    mapping = REGROUPINGS[scheme]
    out = annotations.copy()
    if "original_emotion" not in out:
        out["original_emotion"] = out["emotion"]
    out["emotion"] = out["emotion"].str.lower().map(mapping).astype("string")
    return out[out["emotion"].notna()].reset_index(drop=True)


# ---- CDMER (FR paper Table 10) -------------------------------------------------------------------

CDMER_EXPERIMENTS = pd.DataFrame(
    [(1, "Type-I", "smic_hs", "smic_vis"), (2, "Type-I", "smic_vis", "smic_hs"),
     (3, "Type-I", "smic_hs", "smic_nir"), (4, "Type-I", "smic_nir", "smic_hs"),
     (5, "Type-I", "smic_vis", "smic_nir"), (6, "Type-I", "smic_nir", "smic_vis"),
     (7, "Type-II", "casme2", "smic_hs"), (8, "Type-II", "smic_hs", "casme2"),
     (9, "Type-II", "casme2", "smic_vis"), (10, "Type-II", "smic_vis", "casme2"),
     (11, "Type-II", "casme2", "smic_nir"), (12, "Type-II", "smic_nir", "casme2")],
    columns=["experiment", "type", "source", "target"])


def kfold_splits(annotations: pd.DataFrame, n_folds: int = 5, seed: int = 0, label: str = "emotion") -> list[Fold]:
    """Stratified, seeded k-fold over rows: the five-fold rule of CDMER (FR paper Table 11).

    The FR paper says only "five-fold cross validation" for CDMER. Our reading: the model trains on
    the whole labelled source database and is tested on each fold of the target in turn, so that,
    pooled, every target sample is predicted once; use the ``test`` rows of these folds of the target.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = annotations[label].astype(str).to_numpy()
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [Fold(f"fold{k + 1}", train, test)
            for k, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels))]
