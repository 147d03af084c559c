"""Spot, then recognise: the joint task of the MEGC 2022-2025 challenges (Liong, See and Chan 2023).

A spotter's intervals on a long-video set (its LOSO predictions, or :func:`mecore.spot.spot`'s output on a user's
video) are classified, fold by fold, by a recogniser trained under the same LOSO fold: Feature Refinement or its
Basic Inception baseline (:mod:`mecore.models.fr`, registered as ``fr`` and ``fr_basic_inception``), trained on
the annotated expressions (micro and macro) of the fold's training subjects, with their emotions mapped to the
challenge's classes (:func:`ground_truth_emotions`). :func:`mecore.metrics.strs` scores the result.

Choices where the task leaves room:

* **The apex of a spotted interval.** FR's input is the onset-apex optical flow; no spotter here predicts an
  apex (their intervals carry onset, offset and a score), so the default ``apex="mid"`` takes the interval's
  middle frame. ``"predicted"`` uses a spotter's ``apex`` column where it has one (else the middle frame);
  ``"eq1"`` estimates it inside the interval with FR's Eq. 1 (the frame farthest from the onset,
  :func:`mecore.models.fr.estimate_apex`); ``"true"``, for measurement only, takes the apex of the ground truth
  the interval hits (the middle frame for false positives), the bound on what a better apex could give.
* **Training rows.** Every annotated interval (micro and macro) of the training subjects whose label is one of the
  three analysed classes (negative, positive, surprise): ``others`` is not a class of the analysis F1
  (:func:`mecore.metrics.strs`), so a recogniser that could answer it would only lose analysed pairs. Its
  training never sees spotted intervals (the challenge trains its recognisers on ground truth).
* **Labels of rows without an emotion** (the released SAMM-LV sheets): the class their action units show,
  :func:`emotion_from_action_units`; CAS(ME)^2's estimated emotions and SAMM's are mapped as the challenge maps
  them (:data:`mecore.metrics.STR_EMOTION_MAP`).
* **The recogniser's configuration** is the model's own profile (its ``input``, ``model`` and ``train`` groups),
  the same as on the clip datasets of chapter 14.

Trained recognisers are kept per fold under ``runs/str/recognisers/<recogniser>/<dataset>/<profile>-<key>/<subject>``,
keyed by the recogniser's training configuration, the dataset, the classes, the seed and the source of this module
and of the recogniser's, so every spotter reuses them and a code change retrains them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mecore import metrics, paths
from mecore.data.dataset import Dataset, DatasetError, dataset_family
from mecore.loso import LosoResult, configuration, run_key, run_loso, safe_name, write_atomically
from mecore.models import get_model
from mecore.models import fr

RECOGNISERS = ("fr", "fr_basic_inception")
APEX_RULES = ("mid", "predicted", "eq1", "true")


class RecogniseError(ValueError):
    """The pipeline cannot run as asked: an unknown recogniser or apex rule, intervals of unknown videos, a fold
    without training rows."""


# ------------------------------------------------------------------------------------------------ labels
# AU -> class, for long-video rows without an emotion (SAMM-LV's sheets carry action units, not emotions): the
# prototypes of the Facial Action Coding System's emotion rules (Ekman, Friesen and Hager 2002, EMFACS), read the
# way SAMM's objective classes read them (Davison et al. 2018): bilateral AU12 (with or without AU6) is positive; AU1+2
# or AU5/AU26 without AU4 is surprise; the brow lowerer, the lid tightener, the nose wrinkler, the lip corner
# depressor, the chin raiser, the lip stretcher, the lip tightener and presser and the unilateral lip corner
# (contempt) are negative; anything else is others.
NEGATIVE_AUS = {"4", "7", "9", "10", "14", "15", "17", "20", "23", "24"}


def emotion_from_action_units(action_units: str) -> str:
    """The class (``positive``, ``surprise``, ``negative`` or ``others``) of an AU string such as ``"1+2+R12"``."""
    codes = [code.strip().upper() for code in str(action_units).replace(",", "+").split("+") if code.strip()]
    bilateral = {code.lstrip("AU").rstrip("ABCDE") for code in codes if not code[:1] in ("L", "R")}
    sided = {code[1:].rstrip("ABCDE") for code in codes if code[:1] in ("L", "R")}
    if "12" in bilateral:
        return "positive"
    if "4" not in bilateral and ({"1", "2"} <= bilateral or bilateral & {"5", "26"}):
        return "surprise"
    if bilateral & NEGATIVE_AUS or sided & {"12", "14", "10"}:
        return "negative"
    return "others"


def ground_truth_emotions(dataset: Dataset) -> pd.DataFrame:
    """The dataset's annotations with ``emotion`` as a challenge label (:data:`mecore.metrics.STR_LABELS`: the three
    classes or ``others``) and ``emotion_source``: ``"annotated"`` (the dataset's own label, mapped by
    :func:`mecore.metrics.str_emotion` with the dataset family's vocabulary) or ``"action units"`` (no label:
    :func:`emotion_from_action_units`). Rows with neither are an error."""
    family = dataset_family(dataset.name)
    table = dataset.annotations.copy()
    labelled = table["emotion"].notna() & (table["emotion"].astype("string").str.strip() != "")
    no_units = ~labelled & table["action_units"].fillna("").astype(str).str.strip().eq("")
    if no_units.any():
        row = table[no_units].iloc[0]
        raise DatasetError(f"{dataset.root}: {int(no_units.sum())} annotation rows have neither an emotion nor action "
                           f"units, first: video {row['video']!r} onset {row['onset']}; add either to its row")
    table["original_emotion"] = table["emotion"]
    table["emotion"] = [metrics.str_emotion(str(e), family) if known else emotion_from_action_units(aus)
                        for e, aus, known in zip(table["emotion"], table["action_units"], labelled)]
    table["emotion_source"] = np.where(labelled, "annotated", "action units")
    return table


# ------------------------------------------------------------------------------------------------ apex
def apex_for(dataset: Dataset, intervals: pd.DataFrame, rule: str, ground_truth: pd.DataFrame | None = None,
             t_eval: float = 0.5) -> np.ndarray:
    """The apex frame of every spotted interval by ``rule`` (:data:`APEX_RULES`; the module docstring)."""
    if rule not in APEX_RULES:
        raise RecogniseError(f"unknown apex rule {rule!r}; choose one of {', '.join(APEX_RULES)}")
    onset, offset = intervals["onset"].to_numpy(np.int64), intervals["offset"].to_numpy(np.int64)
    mid = (onset + offset) // 2
    if rule == "mid":
        return mid
    if rule == "predicted":
        given = pd.to_numeric(intervals.get("apex", pd.Series(np.nan, index=intervals.index)), errors="coerce")
        return np.where(given.notna(), given.fillna(0).to_numpy(), mid).astype(np.int64)
    if rule == "eq1":
        return np.array([fr.estimate_apex(dataset.video(v), int(a), int(b))
                         for v, a, b in zip(intervals["video"], onset, offset)], dtype=np.int64)
    if ground_truth is None:
        raise RecogniseError("apex rule 'true' needs the ground truth")
    apexes = mid.copy()
    for k, (video, a, b) in enumerate(zip(intervals["video"], onset, offset)):
        truths = ground_truth[(ground_truth["video"] == video) & ground_truth["apex"].notna()]
        if len(truths):
            iou = metrics.interval_iou(a, b, truths["onset"].to_numpy(), truths["offset"].to_numpy())
            best = int(np.argmax(iou))
            if iou[best] >= t_eval:
                apexes[k] = int(truths["apex"].iloc[best])
    return np.clip(apexes, onset, offset)


# ------------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class Recogniser:
    """A recogniser of one LOSO fold: the trained network, its configuration and its training rows' classes."""

    name: str
    subject: str
    trained: fr.TrainedFR
    config: object
    n_train: int


def _source_hash() -> str:
    """12 hex digits of this module's source: its labels and apex rules decide what a recogniser is trained on."""
    return hashlib.sha256(Path(sys.modules[__name__].__file__).read_bytes()).hexdigest()[:12]


def recogniser_folder(recogniser: str, dataset: Dataset, profile: str, seed: int, overrides=None) -> Path:
    """Where the folds of ``recogniser`` trained on ``dataset``'s ground truth are kept (module docstring)."""
    spec = get_model(recogniser)
    config = spec.config(profile, dataset.name, overrides)
    key, _ = run_key(spec, dataset, profile, config.keyed(), seed)
    extra = json.dumps({"classes": list(metrics.STR_CLASSES), "code": _source_hash()})
    key = hashlib.sha256((key + extra).encode()).hexdigest()[:12]
    return paths.runs_dir() / "str" / "recognisers" / recogniser / dataset.name / f"{profile}-{key}"


def train_recogniser(recogniser: str, dataset: Dataset, subject: str, profile: str | None = None, seed: int = 0,
                     overrides=None, ground_truth: pd.DataFrame | None = None, progress: bool = False) -> Recogniser:
    """Train (or reload) ``recogniser`` on the ground truth of every subject but ``subject`` (one LOSO fold)."""
    if recogniser not in RECOGNISERS:
        raise RecogniseError(f"unknown recogniser {recogniser!r}; choose one of {', '.join(RECOGNISERS)}")
    profile = paths.profile(profile)
    config = get_model(recogniser).config(profile, dataset.name, overrides)
    truth = ground_truth_emotions(dataset) if ground_truth is None else ground_truth
    rows = truth[(truth["subject"] != subject) & truth["emotion"].isin(metrics.STR_CLASSES)].reset_index(drop=True)
    if rows.empty:
        raise RecogniseError(f"fold {subject!r} of {dataset.name}: no annotated interval of another subject to train "
                             f"the recogniser on")
    workdir = recogniser_folder(recogniser, dataset, profile, seed, overrides) / safe_name(subject)
    trained = fr.train(dataset, rows, list(metrics.STR_CLASSES), config, seed, workdir=workdir, resume="auto",
                       progress=progress)
    return Recogniser(recogniser, subject, trained, config, len(rows))


def classify(recogniser: Recogniser, dataset: Dataset, intervals: pd.DataFrame, apex: np.ndarray) -> pd.DataFrame:
    """``intervals`` with the recogniser's ``emotion``, its probability ``emotion_p`` and ``p_<class>`` columns."""
    out = intervals.reset_index(drop=True).copy()
    if out.empty:
        for name in ["emotion", "emotion_p", *(f"p_{c}" for c in recogniser.trained.classes)]:
            out[name] = pd.Series(dtype="float64" if name != "emotion" else "string")
        return out
    rows = pd.DataFrame({"video": out["video"], "onset": out["onset"].astype(np.int64), "apex": apex,
                         "offset": out["offset"].astype(np.int64)})
    # the apex is given per row, so FR's own rule ("annotated", else Eq. 1) takes it as it is
    config = recogniser.config.set({"input.apex": "annotated"})
    probabilities, _ = fr.outputs(recogniser.trained, dataset, rows, config)
    classes = np.array(recogniser.trained.classes)
    out["apex_used"] = apex
    out["emotion"] = classes[probabilities.argmax(axis=1)]
    out["emotion_p"] = probabilities.max(axis=1)
    for k, name in enumerate(classes):
        out[f"p_{name}"] = probabilities[:, k]
    return out


# ------------------------------------------------------------------------------------------------ the pipeline
def finished_run(model: str, dataset: Dataset, profile: str | None = None, seed: int = 0,
                 results_dir: str | Path | None = None) -> LosoResult | None:
    """The finished LOSO run of spotter ``model`` on ``dataset`` (its results, read back), or None where it has not
    run: a caller that would rather not train lists what is missing."""
    spec = get_model(model)
    profile = paths.profile(profile)
    key, _ = run_key(spec, dataset, profile, configuration(spec, dataset, profile), seed)
    folder = Path(results_dir or paths.runs_dir() / "loso") / spec.name / dataset.name / f"{profile}-{key}"
    if not (folder / "predictions.csv").exists():
        return None
    return run_loso(spec, dataset, profile, seed=seed, results_dir=results_dir, scheduler="sync", progress=False)


def outcome_counts(score: metrics.STRSResult) -> dict:
    """What becomes of the ground truths of a scored run: ``missed`` (no spotted interval hits it), ``wrong emotion``
    and ``right emotion`` (hit and analysed), ``hit, not analysed`` (hit, label ``others``)."""
    log = score.log
    hits = log[log["hit"].fillna(False).astype(bool) & log["gt_onset"].notna()]
    analysed = hits[hits["analysed"].fillna(False).astype(bool)]
    right = int(analysed["emotion_correct"].fillna(False).astype(bool).sum())
    return {"missed": int(score.fn), "wrong emotion": len(analysed) - right, "right emotion": right,
            "hit, not analysed": len(hits) - len(analysed)}


@dataclass
class STRRun:
    """The spotted intervals with their emotions, the STR score and where they were written."""

    spotter: str
    recogniser: str
    dataset: str
    apex: str
    predictions: pd.DataFrame
    score: metrics.STRSResult
    folder: Path | None


def prefetch_flows(recogniser: str, dataset: Dataset, truth: pd.DataFrame, intervals: pd.DataFrame,
                   profile: str, overrides=None) -> None:
    """The onset-apex flows the recognisers train on (the ground truth's rows, the recogniser's own apex rule) and
    classify (``intervals`` with their ``apex``), computed at once, one process per core, into the flow cache that
    :func:`train_recogniser` and :func:`classify` then read."""
    config = get_model(recogniser).config(profile, dataset.name, overrides)
    training = truth[truth["emotion"].isin(metrics.STR_CLASSES)]
    for rows, inputs in ((training, config.input), (intervals, config.set({"input.apex": "annotated"}).input)):
        if len(rows):
            fr.clip_flows(dataset, rows[["video", "onset", "apex", "offset"]], inputs, workers=os.cpu_count() or 1)


def spot_then_recognise(spotted: pd.DataFrame, dataset: Dataset, recogniser: str = "fr", *, spotter: str = "spotter",
                        profile: str | None = None, apex: str = "mid", seed: int = 0, t_eval: float = 0.5,
                        overrides=None, out_dir: str | Path | None = None, progress: bool = True) -> STRRun:
    """Classify every spotted interval of ``spotted`` (a spotter's LOSO predictions on ``dataset``: ``subject``,
    ``video``, ``onset``, ``offset``, ``score``) with ``recogniser`` trained under the interval's subject's fold, and
    score the result with :func:`mecore.metrics.strs` against the dataset's ground truth with challenge classes.
    ``out_dir`` (default ``runs/str/<spotter>/<dataset>``) receives ``<profile>-<recogniser>-<apex>.csv``."""
    if apex not in APEX_RULES:
        raise RecogniseError(f"unknown apex rule {apex!r}; choose one of {', '.join(APEX_RULES)}")
    unknown = sorted(set(spotted["video"]) - set(dataset.videos))
    if unknown:
        raise RecogniseError(f"{spotter}'s intervals name {len(unknown)} video(s) that {dataset.name} does not have, "
                             f"first {unknown[0]!r}; spot-then-recognise needs the spotter's run on this dataset")
    profile = paths.profile(profile)
    truth = ground_truth_emotions(dataset)
    subject_of = {name: video.subject for name, video in dataset.videos.items()}
    spotted = spotted.assign(subject=spotted["video"].map(subject_of)).reset_index(drop=True)
    apexes = apex_for(dataset, spotted, apex, truth, t_eval)
    prefetch_flows(recogniser, dataset, truth, spotted.assign(apex=apexes), profile, overrides)
    tables = []
    for subject in tqdm(list(dataset.subjects), desc=f"{spotter} + {recogniser} ({apex} apex)", disable=not progress,
                        leave=False):
        here = (spotted["subject"] == subject).to_numpy()
        if not here.any():
            continue  # nothing spotted in this subject's videos: no recogniser to train for it
        model = train_recogniser(recogniser, dataset, subject, profile, seed, overrides, truth)
        tables.append(classify(model, dataset, spotted[here], apexes[here]))
    predictions = pd.concat(tables, ignore_index=True) if tables else \
        spotted.iloc[:0].assign(emotion=pd.Series(dtype="string"), emotion_p=pd.Series(dtype="float64"))
    score = metrics.strs(truth, predictions, t_eval=t_eval, videos=list(dataset.videos))
    folder = Path(out_dir) if out_dir is not None else paths.runs_dir() / "str" / spotter / dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / f"{profile}-{recogniser}-{apex}.csv", predictions.to_csv(index=False).encode())
    return STRRun(spotter, recogniser, dataset.name, apex, predictions, score, folder)
