"""Evaluation of spotting and recognition, one named convention at a time.

The papers do not all count the same way, so every spotting
number here says which convention produced it:

* ``"megc2020"`` — MEGC 2020 challenge baseline ("gt-found", He et al. 2020, Sec. II-C): a ground
  truth is found when any spotted interval hits it and is counted once; TP = ground truths found,
  FP = spotted intervals - TP, FN = ground truths - TP, precision = found / spotted, as the baseline
  code computes them (see :func:`spotting_counts` for the case where they look odd).
* ``"greedy"`` — one-to-one greedy matching (the VOC-style matcher of several public repos): spotted
  intervals, by decreasing score, each take the unmatched ground truth of highest IoU if it hits.
* ``"mesnet"`` — MESNet (Wang et al. 2021, Sec. IV-A-2, Eq. 15): recall = a/m with a the ground
  truths found; precision = b/n with b the spotted intervals that hit; F1 = 2ab / (an + bm).
* ``"stsnet"`` — STSNet_SW (Fu et al. 2023, Eqs. 8-15): a TP is a spotted interval that hits
  (Eq. 8); recall = a/m, precision = a/n per type; "overall" sums a, m and n over the types.

Every convention scores micro and macro separately and an "overall" row that sums the counts over
both types (MEGC 2020; STSNet_SW Eqs. 13-14). A "hit" is IoU >= ``t_eval`` with inclusive frame
counts. Inputs are plain DataFrames: ground truth and spotted intervals with columns ``video``,
``onset``, ``offset`` (inclusive frame numbers), ``type`` ("micro"/"macro") and, for spotted
intervals, an optional ``score``. :func:`spotting_log` lists every interval and its verdict, like
the MEGC log files, so that a reader can see why a number is what it is.

Inputs are checked: an interval with offset < onset, or a missing or non-numeric bound, is an error
naming the row; fractional frame numbers (a resampled clip's) are rounded to the nearest frame; spotted
intervals of a type other than micro/macro, and spotted intervals in videos that are neither in the
ground truth nor in ``videos`` (a typo in a video name scores as false positives that can never match),
are named in a warning.

The spot-then-recognise score of the MEGC 2024/2025 STR task, :func:`strs`, has its own section at the end.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score, roc_curve

SPOTTING_CONVENTIONS = ("megc2020", "greedy", "mesnet", "stsnet")
EXPRESSION_TYPES = ("micro", "macro")
LOG_COLUMNS = ["video", "type", "gt_onset", "gt_offset", "spot_onset", "spot_offset", "score", "iou", "verdict"]


# ----------------------------------------------------------------------------------------- IoU
def interval_iou(onset_a, offset_a, onset_b, offset_b) -> np.ndarray:
    """IoU of inclusive frame intervals [onset, offset]; broadcasts like NumPy.

    Fractional bounds (a resampled clip's) are rounded to the nearest frame first (half to even).
    Lengths are ``offset - onset + 1`` and the intersection counts shared frames, so [5, 5] and
    [5, 5] have IoU 1 and [1, 2] and [3, 4] have IoU 0 (evaluation.md, "Interval IoU").

    The formula evaluation.md quotes for the MEGC 2020 code, ``(inter + 1) / (len1 + len2 - inter)``
    with exclusive lengths ``len = offset - onset`` and ``inter = min(offsets) - max(onsets)``, is *not*
    the same number: its numerator is the shared frame count ``I`` but its denominator is the inclusive
    union minus one frame, ``I / (U - 1)``. It differs most on the edges: two identical single-frame
    intervals ([5, 5], [5, 5]) give 1 / 0 (undefined) instead of 1; two intervals that touch in one
    frame ([1, 2], [2, 3]) give 1 / 2 instead of 1 / 3, a hit at ``t_eval`` = 0.5 that this IoU does
    not count; intervals that share no frame give ``inter + 1 <= 0`` (0 for adjacent ones, negative
    otherwise) instead of 0; and overlapping intervals of more frames get ``U / (U - 1)`` times this
    IoU (identical intervals of L frames: L / (L - 1) > 1). This inclusive-frame IoU is used by every
    convention here.
    """
    onset_a, offset_a, onset_b, offset_b = (np.rint(np.asarray(x, dtype=float)).astype(np.int64)
                                            for x in (onset_a, offset_a, onset_b, offset_b))
    inter = np.clip(np.minimum(offset_a, offset_b) - np.maximum(onset_a, onset_b) + 1, 0, None)
    union = (offset_a - onset_a + 1) + (offset_b - onset_b + 1) - inter
    return inter / union


def iou_matrix(spotted: pd.DataFrame, ground_truth: pd.DataFrame) -> np.ndarray:
    """IoU of every spotted interval (rows) with every ground truth (columns), ignoring videos."""
    sp, gt = _bounds(spotted, "spotted interval"), _bounds(ground_truth, "ground truth")
    return interval_iou(sp[:, None, 0], sp[:, None, 1], gt[None, :, 0], gt[None, :, 1])


# ------------------------------------------------------------------------ ratios from counts
def ratios_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision TP/(TP+FP), recall TP/(TP+FN) and F1 2TP/(2TP+FP+FN).

    The MEGC 2020, greedy and STSNet_SW tables (Fu et al. Tables 2-4) are printed as TP, FP, FN;
    this recomputes their ratios. An undefined ratio (0/0) is NaN.
    """
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def mesnet_ratios(found: int, hits: int, n_gt: int, n_spotted: int) -> dict[str, float]:
    """MESNet (Wang et al. 2021, Sec. IV-A-2): recall a/m, precision b/n, F1 = 2ab / (an + bm).

    ``found`` = a, ground truths with at least one hitting spotted interval; ``hits`` = b, spotted
    intervals that hit some ground truth (Table X prints them as "TP / Find" = b / a);
    ``n_gt`` = m; ``n_spotted`` = n. F1 is 0 when nothing is found, NaN when m = n = 0.
    """
    a, b, m, n = found, hits, n_gt, n_spotted
    f1 = 2 * a * b / (a * n + b * m) if a * b > 0 else (0.0 if m + n > 0 else np.nan)
    return {"precision": _ratio(b, n), "recall": _ratio(a, m), "f1": f1}


def megc2020_ratios(found: int, n_gt: int, n_spotted: int) -> dict[str, float]:
    """The MEGC 2020 baseline's ratios: recall = found / ground truths, precision = found / spotted,
    F1 = 2 precision recall / (precision + recall) = 2 found / (ground truths + spotted). They equal
    :func:`ratios_from_counts` of TP = found, FP = spotted - found, FN = ground truths - found. F1 is 0 when
    nothing is found, NaN when there is neither a ground truth nor a spotted interval."""
    a, m, n = found, n_gt, n_spotted
    return {"precision": _ratio(a, n), "recall": _ratio(a, m), "f1": _ratio(2 * a, m + n) if a else
            (0.0 if m + n else np.nan)}


def stsnet_ratios(tp: int, n_gt: int, n_spotted: int) -> dict[str, float]:
    """STSNet_SW (Fu et al. 2023, Eqs. 9-15): precision a/n, recall a/m, F1 their harmonic mean.

    ``tp`` = a, spotted intervals that satisfy Eq. 8. For "overall", pass a, m and n summed over
    macro and micro (Eqs. 13-14). F1 is 0 when a = 0, NaN when m = n = 0.
    """
    precision, recall = _ratio(tp, n_spotted), _ratio(tp, n_gt)
    if tp == 0:
        return {"precision": precision, "recall": recall, "f1": 0.0 if n_gt + n_spotted else np.nan}
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall)}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else np.nan


# ------------------------------------------------------------------------------ spotting
def spotting_counts(ground_truth: pd.DataFrame, spotted: pd.DataFrame, convention: str = "megc2020",
                    t_eval: float = 0.5, only_videos_with_gt: bool = False,
                    types: tuple[str, ...] = EXPRESSION_TYPES, videos=None) -> pd.DataFrame:
    """Counts and ratios of one convention: a row per type and an ``overall`` row.

    Columns: ``n_gt`` (m), ``n_spotted`` (n), ``found`` (a: ground truths hit at least once),
    ``hits`` (b: spotted intervals that hit some ground truth), ``tp``, ``fp``, ``fn`` as the
    convention counts them, then ``precision``, ``recall``, ``f1``. Counts are summed over videos
    ("the dataset as one long video", MEGC 2020) and over types for ``overall``.

    ``only_videos_with_gt`` drops spotted intervals in videos with no ground truth of that type,
    as some public repos do (under-counts false positives; off by default, evaluation.md).
    ``videos``: the names of every video that was spotted, those without any expression too (a
    LOSO run passes its dataset's); spotted intervals in a video neither there nor in the ground truth
    are named in a warning (default: the ground truth's videos).
    Conventions' TP/FP/FN (per video and type, then summed):

    * megc2020: TP = a, FP = n - a, FN = m - a; precision = a / n (found / spotted), recall = a / m,
      F1 = 2a / (m + n) (:func:`megc2020_ratios`), as the MEGC 2020 baseline code computes them. When
      one spotted interval finds two ground truths (overlapping ground truths, or ``t_eval`` < 0.5)
      a video can have a > n: its FP is then negative and precision can exceed TP / (TP + max(FP, 0));
      we follow the baseline rather than clip FP at 0 per video, so that the numbers are the
      baseline's.
    * greedy: TP = matched pairs, FP = n - TP, FN = m - TP.
    * mesnet: TP = b, FP = n - b, FN = m - a; ratios from :func:`mesnet_ratios`.
    * stsnet: TP = b (a spotted interval is a TP when it hits, Eq. 8), FP = n - b,
      FN = max(m - b, 0) as in Table 2 (FN = Total - TP); recall = b/m can exceed 1 when several
      spotted intervals hit one ground truth, the flaw MESNet's Fig. 6 points out.
    """
    _check_convention(convention)
    _check_inputs(ground_truth, spotted, videos, only_videos_with_gt)
    names = ("n_gt", "n_spotted", "found", "hits", "tp", "fp", "fn")
    totals = np.zeros((len(types) + 1, len(names)), dtype=np.int64)
    for expression_type, _, gt, sp, scores in _groups(ground_truth, spotted, types, only_videos_with_gt):
        match = _match_video(gt, sp, scores, convention, t_eval)
        totals[list(types).index(expression_type)] += [match.counts[name] for name in names]
    totals[-1] = totals[:-1].sum(axis=0)
    table = pd.DataFrame(totals, index=pd.Index([*types, "overall"], name="type"), columns=list(names))
    ratios = [_convention_ratios(convention, row) for _, row in table.iterrows()]
    table = table.join(pd.DataFrame(ratios, index=table.index))
    table.insert(0, "t_eval", float(t_eval))
    table.insert(0, "convention", convention)
    return table


def compare_conventions(ground_truth: pd.DataFrame, spotted: pd.DataFrame, t_eval: float = 0.5,
                        conventions: tuple[str, ...] = SPOTTING_CONVENTIONS, **options) -> pd.DataFrame:
    """:func:`spotting_counts` of several conventions stacked, indexed by (convention, type)."""
    tables = [spotting_counts(ground_truth, spotted, c, t_eval, **options).drop(columns="convention") for c in conventions]
    return pd.concat(tables, keys=list(conventions), names=["convention", "type"])


def spotting_log(ground_truth: pd.DataFrame, spotted: pd.DataFrame, convention: str = "megc2020",
                 t_eval: float = 0.5, only_videos_with_gt: bool = False,
                 types: tuple[str, ...] = EXPRESSION_TYPES, videos=None) -> pd.DataFrame:
    """One row per spotted interval and per missed ground truth, with the convention's verdict.

    Columns :data:`LOG_COLUMNS`. A spotted interval is shown beside the ground truth it was
    credited to (or, if none, the one of highest IoU). Verdicts: ``TP``; ``FP`` (hits nothing);
    ``FP (duplicate)`` (hits a ground truth already credited: megc2020 and greedy); ``FN`` (a
    ground truth no spotted interval hits; for greedy, one left unmatched).

    The ``TP`` rows are the counts' TP, one per TP. Under megc2020 a found ground truth is credited to
    its best hitter not yet credited; when every hitter is already credited (one spotted interval
    finds two ground truths) the interval appears in one more ``TP`` row, beside the second ground
    truth. As the baseline counts FP = spotted - found, the ``FP`` rows then outnumber FP by one per
    such extra row.
    """
    _check_convention(convention)
    _check_inputs(ground_truth, spotted, videos, only_videos_with_gt)
    frames = []
    for expression_type, video, gt, sp, scores in _groups(ground_truth, spotted, types, only_videos_with_gt):
        match = _match_video(gt, sp, scores, convention, t_eval)
        paired = np.where(match.credited >= 0, match.credited, match.best)
        has_gt = paired >= 0
        spotted_rows = pd.DataFrame({
            "gt_onset": pd.array(np.where(has_gt, gt[paired, 0] if len(gt) else 0, 0), dtype="Int64"),
            "gt_offset": pd.array(np.where(has_gt, gt[paired, 1] if len(gt) else 0, 0), dtype="Int64"),
            "spot_onset": sp[:, 0], "spot_offset": sp[:, 1], "score": scores,
            "iou": np.where(has_gt, match.iou[np.arange(len(sp)), np.maximum(paired, 0)] if len(gt) else 0.0, 0.0),
            "verdict": np.where(match.credited >= 0, "TP", np.where(match.hits, "FP (duplicate)", "FP")),
        })
        spotted_rows.loc[~has_gt, ["gt_onset", "gt_offset"]] = pd.NA
        extra = np.asarray(match.also, dtype=np.int64).reshape(-1, 2)  # (spotted, ground truth) credited again
        extra_rows = pd.DataFrame({"gt_onset": gt[extra[:, 1], 0], "gt_offset": gt[extra[:, 1], 1],
                                   "spot_onset": sp[extra[:, 0], 0], "spot_offset": sp[extra[:, 0], 1],
                                   "score": scores[extra[:, 0]], "iou": match.iou[extra[:, 0], extra[:, 1]],
                                   "verdict": "TP"}, index=range(len(extra)))
        missed = gt[~match.covered]
        missed_rows = pd.DataFrame({"gt_onset": missed[:, 0], "gt_offset": missed[:, 1], "spot_onset": pd.NA,
                                    "spot_offset": pd.NA, "score": np.nan, "iou": 0.0, "verdict": "FN"},
                                   index=range(len(missed)))
        log = pd.concat([frame for frame in (spotted_rows, extra_rows, missed_rows) if len(frame)],
                        ignore_index=True)
        log.insert(0, "type", expression_type)
        log.insert(0, "video", video)
        frames.append(log)
    log = pd.concat(frames, ignore_index=True)[LOG_COLUMNS] if frames else pd.DataFrame(columns=LOG_COLUMNS)
    for column in ("gt_onset", "gt_offset", "spot_onset", "spot_offset"):
        log[column] = log[column].astype("Int64")
    return log


@dataclass
class _VideoMatch:
    counts: dict[str, int]
    iou: np.ndarray  # (spotted, ground truth)
    hits: np.ndarray  # per spotted interval: hits some ground truth
    best: np.ndarray  # per spotted interval: ground truth of highest positive IoU, or -1
    credited: np.ndarray  # per spotted interval: the ground truth it is a TP for, or -1
    covered: np.ndarray  # per ground truth: not a false negative
    also: list = None  # megc2020: (spotted, ground truth) pairs of an interval credited with a further TP


def _match_video(gt: np.ndarray, sp: np.ndarray, scores: np.ndarray, convention: str, t_eval: float) -> _VideoMatch:
    """Match the spotted intervals of one video and type (rows [onset, offset]) to its ground truth."""
    m, n = len(gt), len(sp)
    iou = interval_iou(sp[:, None, 0], sp[:, None, 1], gt[None, :, 0], gt[None, :, 1]) if m and n else np.zeros((n, m))
    hit = iou >= t_eval
    found, hits = hit.any(axis=0), hit.any(axis=1)
    a, b = int(found.sum()), int(hits.sum())
    order = np.argsort(-scores, kind="stable")
    best = np.where(iou.max(axis=1) > 0, iou.argmax(axis=1), -1) if m else np.full(n, -1)
    credited = np.full(n, -1)
    also: list[tuple[int, int]] = []
    if convention == "greedy":
        taken = np.zeros(m, bool)
        for s in order[hits[order]]:
            free = np.flatnonzero(hit[s] & ~taken)
            if free.size:
                credited[s] = free[np.argmax(iou[s, free])]
                taken[credited[s]] = True
        tp = int(taken.sum())
        counts = {"tp": tp, "fp": n - tp, "fn": m - tp}
        covered = taken
    elif convention == "megc2020":
        for g in np.flatnonzero(found):  # credit each found ground truth to its best hitter not yet credited
            hitters = order[hit[order, g]]
            free = hitters[credited[hitters] < 0]
            if free.size:
                credited[free[np.argmax(iou[free, g])]] = g
            else:  # every hitter already found another ground truth: the baseline still counts this one
                also.append((int(hitters[np.argmax(iou[hitters, g])]), int(g)))
        counts = {"tp": a, "fp": n - a, "fn": m - a}  # the baseline's FP: negative where a > n
        covered = found
    else:  # mesnet, stsnet: every hitting spotted interval is a TP
        credited = np.where(hits, best, -1)
        counts = {"tp": b, "fp": n - b, "fn": m - a if convention == "mesnet" else max(m - b, 0)}
        covered = found
    return _VideoMatch({"n_gt": m, "n_spotted": n, "found": a, "hits": b, **counts}, iou, hits, best, credited, covered,
                       also)


def _convention_ratios(convention: str, row: pd.Series) -> dict[str, float]:
    if convention == "mesnet":
        return mesnet_ratios(row["found"], row["hits"], row["n_gt"], row["n_spotted"])
    if convention == "stsnet":
        return stsnet_ratios(row["tp"], row["n_gt"], row["n_spotted"])
    if convention == "megc2020":
        return megc2020_ratios(row["found"], row["n_gt"], row["n_spotted"])
    return ratios_from_counts(row["tp"], row["fp"], row["fn"])


def _check_convention(convention: str) -> None:
    if convention not in SPOTTING_CONVENTIONS:
        raise ValueError(f"unknown spotting convention {convention!r}; choose one of {SPOTTING_CONVENTIONS}")


def _bounds(table: pd.DataFrame, what: str) -> np.ndarray:
    """(n, 2) int64 [onset, offset] rows, rounded to the nearest frame; ValueError naming the first row with a
    missing or non-numeric bound or with offset < onset."""
    values = {}
    for column in ("onset", "offset"):
        if column not in table:
            raise ValueError(f"{what}s have no {column!r} column (columns: {list(table.columns)})")
        numbers = pd.to_numeric(table[column], errors="coerce").astype("float64").to_numpy()
        bad = np.flatnonzero(~np.isfinite(numbers))
        if bad.size:
            value = table[column].iloc[bad[0]]
            shown = repr(value) if isinstance(value, str) else str(value)
            raise ValueError(f"{what} {_where(table, bad[0])}: {column} {shown} is not a frame number")
        values[column] = np.rint(numbers).astype(np.int64)
    backwards = np.flatnonzero(values["offset"] < values["onset"])
    if backwards.size:
        i = backwards[0]
        raise ValueError(f"{what} {_where(table, i)}: offset {table['offset'].iloc[i]} is before onset "
                         f"{table['onset'].iloc[i]} ({backwards.size} such row(s)); an interval runs from onset "
                         f"to offset, inclusive")
    return np.column_stack([values["onset"], values["offset"]]) if len(table) else np.zeros((0, 2), np.int64)


def _where(table: pd.DataFrame, position: int) -> str:
    video = f", video {table['video'].iloc[position]!r}" if "video" in table else ""
    return f"row {table.index[position]!r}{video}"


def _check_inputs(ground_truth: pd.DataFrame, spotted: pd.DataFrame, videos, only_videos_with_gt: bool) -> None:
    """Warn about spotted intervals nothing can score as intended: of an unknown type, or in a video that is
    neither in the ground truth nor in ``videos``."""
    for table, what in ((spotted, "spotted intervals"), (ground_truth, "ground-truth intervals")):
        if "type" in table and len(table):
            odd = table.loc[~table["type"].isin(EXPRESSION_TYPES), "type"]
            if len(odd):
                names = sorted({str(t) for t in odd})
                warnings.warn(f"{len(odd)} {what} have a type other than micro/macro and are not scored: "
                              f"types {_listing(names)}", stacklevel=3)
    if "video" not in spotted or not len(spotted):
        return
    known = set(ground_truth["video"].astype(str)) if "video" in ground_truth else set()
    if videos is not None:
        known |= {str(v) for v in videos}
    unknown = sorted(set(spotted["video"].astype(str)) - known)
    if unknown:
        rows = int(spotted["video"].astype(str).isin(unknown).sum())
        fate = "are not scored (only_videos_with_gt)" if only_videos_with_gt else "count as false positives"
        source = "the ground truth or the videos given" if videos is not None else \
            "the ground truth (pass videos= to name the videos without any expression)"
        warnings.warn(f"{rows} spotted intervals are in videos not in {source} and {fate}: videos "
                      f"{_listing(unknown)}", stacklevel=3)


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _groups(ground_truth: pd.DataFrame, spotted: pd.DataFrame, types, only_videos_with_gt: bool):
    """Yield (type, video, gt [onset, offset] rows, spotted rows, spotted scores) per video and type.

    Every video that has ground truth or spotted intervals of the type is visited, or only the
    videos with ground truth of that type when ``only_videos_with_gt``.
    """
    gt_bounds = _bounds(ground_truth, "ground truth")
    sp_bounds = _bounds(spotted, "spotted interval")
    sp_scores = spotted["score"].to_numpy(dtype=float) if "score" in spotted else np.full(len(spotted), np.nan)
    gt_index = _group_index(ground_truth)
    sp_index = _group_index(spotted)
    empty = np.zeros(0, dtype=np.int64)
    for expression_type in types:
        gt_videos = {v for t, v in gt_index if t == expression_type}
        sp_videos = {v for t, v in sp_index if t == expression_type}
        videos = gt_videos if only_videos_with_gt else gt_videos | sp_videos
        for video in sorted(videos, key=str):
            g, s = gt_index.get((expression_type, video), empty), sp_index.get((expression_type, video), empty)
            yield expression_type, video, gt_bounds[g], sp_bounds[s], sp_scores[s]


def _group_index(table: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """(type, video) -> positions of its rows."""
    if table.empty:
        return {}
    return {key: np.asarray(rows) for key, rows in table.groupby(["type", "video"], observed=True, sort=False).indices.items()}


# --------------------------------------------------------------------------- frame level
def roc_threshold(labels, scores) -> float:
    """The score threshold of the ROC point that maximises TPR - FPR (Youden's J).

    Yap et al. 2022 (Sec. 4, Table 4; Sec. 4.1) threshold per-frame scores "based on ROC curve"
    without naming the criterion; Youden's J is our choice (the most common one). Note that it
    reads the ground truth, so a threshold chosen on the test set is optimistic, as in the paper.
    """
    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    if labels.all() or not labels.any():
        raise ValueError("an ROC threshold needs both positive and negative frames")
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return float(min(thresholds[np.argmax(tpr - fpr)], scores.max()))


def frame_level_metrics(labels, scores, threshold: float | None = None) -> dict[str, float]:
    """Per-frame F1 and ROC AUC of raw per-frame scores (Yap et al. 2022, Table 4).

    ``labels``: one bool per frame (see :func:`mecore.postprocess.intervals_to_labels`); ``scores``:
    the model's per-frame scores. F1 uses ``scores >= threshold``, by default :func:`roc_threshold`.
    AUC is NaN when the labels hold only one class.
    """
    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    one_class = labels.all() or not labels.any()
    if threshold is None:
        threshold = np.nan if one_class else roc_threshold(labels, scores)
    predicted = scores >= threshold
    return {
        "f1": float(f1_score(labels, predicted, zero_division=0.0)),
        "auc": np.nan if one_class else float(roc_auc_score(labels, scores)),
        "threshold": float(threshold),
        "n_frames": int(labels.size),
        "n_positive": int(labels.sum()),
    }


# ---------------------------------------------------------------------------- recognition
@dataclass
class RecognitionResult:
    """Accuracy, UF1, UAR and the confusion matrix, with how they were averaged.

    ``per_class``: support, recall, precision and F1 per class; ``absent_classes``: classes with
    no ground-truth sample (their recall is undefined; they are left out of UF1 and UAR and listed
    here); ``per_fold``: the per-fold numbers (None when pooled).
    """

    averaging: str
    accuracy: float
    uf1: float
    uar: float
    confusion: pd.DataFrame
    per_class: pd.DataFrame
    absent_classes: list
    per_fold: pd.DataFrame | None = None


def recognition_metrics(y_true, y_pred, classes=None, folds=None, averaging: str = "pooled",
                        on_absent: str = "warn") -> RecognitionResult:
    """Accuracy, unweighted F1 and unweighted average recall (Zhou et al., Sec. 6.2; MEGC 2019).

    UF1 is the mean of per-class F1, UAR the mean of per-class recall. ``averaging="pooled"``
    (the standard under LOSO) pools the predictions of all folds and computes each metric once;
    ``averaging="per_fold"`` computes them per fold (``folds`` gives each sample's fold, e.g. the
    left-out subject) and averages, a different number that must be labelled as such. A class of
    ``classes`` absent from the pooled ground truth raises (``on_absent="raise"``) or is reported
    in ``absent_classes`` with a warning (``"warn"``), never silently skipped; per fold, absences
    are listed in ``per_fold["absent_classes"]``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = list(np.unique(np.concatenate([y_true, y_pred]))) if classes is None else list(classes)
    pooled = _recognition_scores(y_true, y_pred, classes)
    absent = pooled["absent"]
    if absent:
        message = f"classes absent from the ground truth (left out of UF1 and UAR): {absent}"
        if on_absent == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    if averaging == "pooled":
        return RecognitionResult("pooled", pooled["accuracy"], pooled["uf1"], pooled["uar"],
                                 pooled["confusion"], pooled["per_class"], absent)
    if averaging != "per_fold":
        raise ValueError(f"averaging must be 'pooled' or 'per_fold', got {averaging!r}")
    if folds is None:
        raise ValueError("per-fold averaging needs the fold of every sample")
    folds = np.asarray(folds)
    rows = []
    for fold in pd.unique(folds):
        scores = _recognition_scores(y_true[folds == fold], y_pred[folds == fold], classes)
        rows.append({"fold": fold, "n": int((folds == fold).sum()), "accuracy": scores["accuracy"],
                     "uf1": scores["uf1"], "uar": scores["uar"], "absent_classes": scores["absent"]})
    per_fold = pd.DataFrame(rows)
    return RecognitionResult("per_fold", float(per_fold["accuracy"].mean()), float(per_fold["uf1"].mean()),
                             float(per_fold["uar"].mean()), pooled["confusion"], pooled["per_class"], absent, per_fold)


def _recognition_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list) -> dict:
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    support, predicted, correct = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / support, np.nan)
        precision = np.where(predicted > 0, correct / predicted, 0.0)
        f1 = np.where(support > 0, 2 * correct / (support + predicted), np.nan)
    present = support > 0
    per_class = pd.DataFrame({"support": support, "recall": recall, "precision": precision, "f1": f1},
                             index=pd.Index(classes, name="class"))
    return {
        "accuracy": float(correct.sum() / matrix.sum()) if matrix.sum() else np.nan,
        "uf1": float(f1[present].mean()) if present.any() else np.nan,
        "uar": float(recall[present].mean()) if present.any() else np.nan,
        "confusion": pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted")),
        "per_class": per_class,
        "absent": [c for c, p in zip(classes, present) if not p],
    }


# ================================================================================================
# ----------------------------------------------------------------- spot-then-recognise (STRS)
# ================================================================================================
# The Spot-Then-Recognise Score of Liong, See and Chan (2023), as scored by the MEGC 2024 and 2025
# spot-then-recognise (STR) task. Where the paper and the challenge's code differ, the code is followed:
# genbing99/STRS-Metric, strs_metric.py (newest commit, "update eval code", June 2024).

STR_CLASSES = ("negative", "positive", "surprise")
"""The STR task's emotion classes: the analysis F1 averages over these three (STRS-Metric main.py, MEAN)."""
STR_OTHERS = "others"
"""A label that may be spotted and annotated but is not an analysed class (MEAN drops it from recognition)."""
STR_LABELS = (*STR_CLASSES, STR_OTHERS)

STR_EMOTION_MAP: dict[str, dict[str, str]] = {
    # Labels that are already the task's.
    "str": {label: label for label in STR_LABELS},
    # CAS(ME)^2's estimated emotions are the task's four labels (MEAN, load_label.py, CASME_sq).
    "casme_sq": {label: label for label in STR_LABELS},
    # SAMM (and SAMM-LV, whose emotions are SAMM's): MEAN, load_label.py, SAMMLV.
    "samm": {**{e: "negative" for e in ("anger", "contempt", "disgust", "fear", "sadness")},
             "happiness": "positive", "surprise": "surprise", "other": "others", "others": "others"},
    # CASME II is not an STR test set; MEGC 2019's composite three classes (mecore.data.splits "cde3"),
    # with its others kept as others.
    "casme2": {**{e: "negative" for e in ("disgust", "repression", "fear", "sadness")},
               "happiness": "positive", "surprise": "surprise", "others": "others"},
    # SMIC's labels are already negative, positive and surprise (MEAN, load_label.py, SMIC).
    "smic": {label: label for label in STR_CLASSES},
}
"""Dataset emotion (lower case) -> STR label, per dataset vocabulary; see :func:`str_emotion`."""
_STR_DATASET_ALIASES = {"samm_lv": "samm", "smic_hs": "smic", "smic_vis": "smic", "smic_nir": "smic",
                        "smic_e": "smic"}
STR_LOG_COLUMNS = ["subject", "video", "spot_onset", "spot_offset", "spot_emotion", "score", "gt_onset",
                   "gt_offset", "gt_emotion", "iou", "verdict", "hit", "emotion_correct", "analysed"]


def str_emotion(label, dataset: str = "str") -> str:
    """The STR label (negative, positive, surprise or others) of one emotion of ``dataset``.

    ``dataset``: a key of :data:`STR_EMOTION_MAP` (``samm_lv`` and the ``smic_*`` names are aliases).
    Case and surrounding spaces are ignored (SAMM writes ``Happiness``). An unknown or missing label is a
    ValueError naming it and the labels the dataset has.
    """
    table = _str_emotion_table(dataset)
    if not isinstance(label, str):
        raise ValueError(f"emotion {label!r} is not text; {dataset} emotions are {_listing(sorted(table), 20)}")
    key = label.strip().lower()
    if key not in table:
        raise ValueError(f"emotion {label!r} is not a {dataset} emotion the STR task maps; known: "
                         f"{_listing(sorted(table), 20)}")
    return table[key]


def str_emotions(labels, dataset: str = "str") -> pd.Series:
    """:func:`str_emotion` of every label (a Series keeps its index); the first unknown one is an error."""
    series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels), dtype=object)
    return pd.Series([str_emotion(label, dataset) for label in series], index=series.index, dtype=object)


def _str_emotion_table(dataset: str) -> dict[str, str]:
    name = _STR_DATASET_ALIASES.get(dataset, dataset)
    if name not in STR_EMOTION_MAP:
        raise ValueError(f"no STR emotion mapping for dataset {dataset!r}; choose one of "
                         f"{sorted([*STR_EMOTION_MAP, *_STR_DATASET_ALIASES])}")
    return STR_EMOTION_MAP[name]


@dataclass(frozen=True, eq=False)
class STRSResult:
    """STRS and its parts. ``per_class``: class, support (analysed pairs of that ground-truth class), tp,
    fp, fn, precision, recall, f1, counted (in the macro average); labels left out of the analysis
    (``others``) have a row with ``counted`` False and only their support. ``log``: one row per spotted
    interval and per missed ground truth (:data:`STR_LOG_COLUMNS`), see :func:`strs`."""

    strs: float
    spot_f1: float
    spot_precision: float
    spot_recall: float
    tp: int
    fp: int
    fn: int
    n_gt: int
    n_spotted: int
    analysis_f1: float
    analysis_precision: float
    analysis_recall: float
    analysis_uf1: float
    analysis_uar: float
    n_analysed: int
    n_not_analysed: int
    classes: tuple
    t_eval: float
    per_class: pd.DataFrame
    log: pd.DataFrame

    def as_dict(self) -> dict:
        """The numbers (no tables), JSON-ready."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ("per_class", "log")}
        out["classes"] = list(self.classes)
        return out


def strs(ground_truth: pd.DataFrame, spotted: pd.DataFrame, t_eval: float = 0.5, classes=STR_CLASSES,
         videos=None) -> STRSResult:
    """Spot-Then-Recognise Score = spotting F1 x analysis F1, as genbing99/STRS-Metric computes it.

    Inputs have columns ``video``, ``onset``, ``offset`` (inclusive frames) and ``emotion`` (an STR label:
    map a dataset's with :func:`str_emotion`); ``subject`` too in both, when video names repeat across
    subjects (the official code keys on subject and video); ``spotted`` may carry ``score`` (only shown
    in the log). Frame numbers must have one base in both tables.

    Spotting, per video, in row order as the official code: each spotted interval takes *every* ground
    truth of its video not yet taken with IoU >= ``t_eval`` (inclusive frames, :func:`interval_iou`);
    each pair is a TP, so an interval that hits two free ground truths is two TPs. A spotted interval
    that takes none is a FP (also when it hits only ground truths already taken); a ground truth never
    taken is a FN. TP, FP and FN are summed over videos; precision TP/(TP+FP), recall TP/(TP+FN), F1
    their harmonic mean, each 0 when undefined (as the code).

    Analysis, over the TP pairs of all videos whose ground-truth emotion is in ``classes`` (others' pairs
    are left out): per class one-vs-rest TP (both that class), FP (predicted it, truth another), FN (truth
    it, predicted another), precision, recall and F1, 0 when undefined, so a class never predicted has
    precision 0 and still enters the average. The analysis precision and recall are the means over
    ``classes``; the analysis F1 is *their* harmonic mean (not the mean F1, given as ``analysis_uf1``).
    ``classes``: :data:`STR_CLASSES` (the challenge's), any list, or None for every label of the ground
    truth, others included (STRS-Metric's default).

    Where we differ from STRS-Metric, and why: (1) spotted intervals in videos without ground truth are
    false positives, and ``videos`` (every video of the set, the unannotated ones too, as names or
    (subject, video) pairs) must name such videos, else they are an error; the official code drops them,
    as it drops the ground truth of a subject with nothing spotted, which we count as FN. (2) When the
    analysis precision and recall are both 0 the analysis F1 is 0 (the code divides 0 by 0: NaN).
    (3) A class whose analysed pairs are all of it and all right scores 1; the code's one-vs-rest
    confusion matrix then has one cell and its try/except scores the class 0 (a warning says so).
    (4) ``analysis_uar`` is the mean recall; the code's "UAR analysis" is the mean precision.

    Errors (ValueError, one line): a missing column, a missing or non-numeric bound, offset < onset, a
    missing emotion or one not in ``classes`` + others, a spotted video nowhere in the ground truth or
    ``videos``. ``log`` has a row per TP pair (verdict TP; an interval that took two ground truths has two
    rows), per other spotted interval (FP, or "FP (duplicate)" when it hit only ground truths already
    taken; its ``iou`` is its highest with any ground truth of the video) and per missed ground truth (FN).
    """
    if not 0 < t_eval <= 1:
        raise ValueError(f"t_eval must be in (0, 1], got {t_eval!r}")
    _check_str_columns(ground_truth, "ground truth")
    _check_str_columns(spotted, "spotted interval")
    gt_bounds, sp_bounds = _bounds(ground_truth, "ground truth"), _bounds(spotted, "spotted interval")
    if classes is None:
        gt_labels = _str_labels(ground_truth, "ground truth", None)
        classes = tuple(sorted(set(gt_labels)))
    else:
        classes = tuple(classes)
        if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be distinct labels, got {classes!r}")
    allowed = set(classes) | {STR_OTHERS}
    gt_emotion = _str_labels(ground_truth, "ground truth", allowed)
    sp_emotion = _str_labels(spotted, "spotted interval", allowed)
    gt_keys, sp_keys, by_subject = _str_keys(ground_truth, spotted)
    _check_str_videos(gt_keys, sp_keys, spotted, videos, by_subject)
    scores = (pd.to_numeric(spotted["score"], errors="coerce").to_numpy(dtype=float) if "score" in spotted
              else np.full(len(spotted), np.nan))

    gt_groups, sp_groups = _positions(gt_keys), _positions(sp_keys)
    rows, pairs = [], []  # pairs: (ground-truth position, spotted position)
    n_fp = 0
    for key in sorted(set(gt_groups) | set(sp_groups), key=str):
        g_pos, s_pos = gt_groups.get(key, []), sp_groups.get(key, [])
        iou = (interval_iou(sp_bounds[s_pos, None, 0], sp_bounds[s_pos, None, 1], gt_bounds[None, g_pos, 0],
                            gt_bounds[None, g_pos, 1]) if g_pos and s_pos else np.zeros((len(s_pos), len(g_pos))))
        taken = np.zeros(len(g_pos), dtype=bool)
        subject = key[0] if by_subject else pd.NA
        video = key[1]
        for i, s in enumerate(s_pos):
            spot = {"subject": subject, "video": video, "spot_onset": sp_bounds[s, 0], "spot_offset": sp_bounds[s, 1],
                    "spot_emotion": sp_emotion[s], "score": scores[s]}
            took = False
            for j, g in enumerate(g_pos):  # every free ground truth it hits (the official loop has no break)
                if not taken[j] and iou[i, j] >= t_eval:
                    taken[j], took = True, True
                    pairs.append((g, s))
                    rows.append({**spot, **_str_gt(gt_bounds, gt_emotion, g), "iou": iou[i, j], "verdict": "TP"})
            if not took:
                n_fp += 1
                best = float(iou[i].max()) if len(g_pos) else 0.0
                rows.append({**spot, "iou": best, "verdict": "FP (duplicate)" if best >= t_eval else "FP"})
        for j in np.flatnonzero(~taken):
            rows.append({"subject": subject, "video": video, **_str_gt(gt_bounds, gt_emotion, g_pos[j]),
                         "verdict": "FN"})
    tp, fn = len(pairs), len(ground_truth) - len(pairs)
    spot_p, spot_r = (tp / (tp + n_fp) if tp + n_fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
    spot_f1 = 2 * spot_p * spot_r / (spot_p + spot_r) if spot_p + spot_r else 0.0

    truth = np.array([gt_emotion[g] for g, _ in pairs], dtype=object)
    said = np.array([sp_emotion[s] for _, s in pairs], dtype=object)
    analysed = np.isin(truth, classes) if len(pairs) else np.zeros(0, dtype=bool)
    per_class, means = _str_per_class(truth, said, analysed, classes)
    precision, recall = means["precision"], means["recall"]
    analysis_f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    log = pd.DataFrame(rows, columns=STR_LOG_COLUMNS)
    log["hit"] = (log["verdict"] == "TP").astype(bool)
    right = pd.array([None] * len(log), dtype="boolean")
    used = pd.array([None] * len(log), dtype="boolean")
    tp_rows = np.flatnonzero(log["hit"].to_numpy())
    right[tp_rows] = (truth == said).tolist()
    used[tp_rows] = analysed.tolist()
    log["emotion_correct"], log["analysed"] = right, used
    for column in ("spot_onset", "spot_offset", "gt_onset", "gt_offset"):
        log[column] = log[column].astype("Int64")
    log[["iou", "score"]] = log[["iou", "score"]].astype(float)
    return STRSResult(
        strs=float(spot_f1 * analysis_f1), spot_f1=float(spot_f1), spot_precision=float(spot_p),
        spot_recall=float(spot_r), tp=tp, fp=n_fp, fn=fn, n_gt=len(ground_truth), n_spotted=len(spotted),
        analysis_f1=float(analysis_f1), analysis_precision=float(precision), analysis_recall=float(recall),
        analysis_uf1=means["f1"], analysis_uar=float(recall), n_analysed=int(analysed.sum()),
        n_not_analysed=int((~analysed).sum()), classes=classes, t_eval=float(t_eval), per_class=per_class, log=log)


def _str_per_class(truth: np.ndarray, said: np.ndarray, analysed: np.ndarray, classes: tuple) -> tuple:
    """Per-class one-vs-rest counts over the analysed TP pairs, and the means over ``classes``."""
    truth_a, said_a = truth[analysed], said[analysed]
    rows = []
    for c in classes:
        tp = int(((truth_a == c) & (said_a == c)).sum())
        fp = int(((truth_a != c) & (said_a == c)).sum())
        fn = int(((truth_a == c) & (said_a != c)).sum())
        if len(truth_a) and tp == len(truth_a):
            warnings.warn(f"every analysed pair is {c!r} and right: scored 1 here; STRS-Metric's one-cell "
                          f"confusion matrix scores class {c!r} 0", stacklevel=3)
        p, r = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        rows.append({"class": c, "support": int((truth_a == c).sum()), "tp": tp, "fp": fp, "fn": fn,
                     "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "counted": True})
    counted = pd.DataFrame(rows)
    means = {name: float(counted[name].mean()) for name in ("precision", "recall", "f1")}
    left_out = [{"class": c, "support": int((truth[~analysed] == c).sum()), "counted": False}
                for c in sorted(set(truth[~analysed]))]
    table = pd.concat([counted, pd.DataFrame(left_out)], ignore_index=True) if left_out else counted
    for column in ("tp", "fp", "fn"):
        table[column] = table[column].astype("Int64")
    table["counted"] = table["counted"].astype(bool)
    return table[["class", "support", "tp", "fp", "fn", "precision", "recall", "f1", "counted"]], means


def _str_gt(gt_bounds: np.ndarray, gt_emotion: list, g: int) -> dict:
    return {"gt_onset": gt_bounds[g, 0], "gt_offset": gt_bounds[g, 1], "gt_emotion": gt_emotion[g]}


def _check_str_columns(table: pd.DataFrame, what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what}s must be a DataFrame, got {type(table).__name__}")
    missing = [c for c in ("video", "onset", "offset", "emotion") if c not in table]
    if missing:
        raise ValueError(f"{what}s have no {', '.join(repr(c) for c in missing)} column (columns: "
                         f"{list(table.columns)}); STRS needs video, onset, offset and emotion")
    bad = np.flatnonzero(table["video"].isna().to_numpy())
    if bad.size:
        raise ValueError(f"{what} row {table.index[bad[0]]!r}: no video name ({bad.size} such row(s))")


def _str_labels(table: pd.DataFrame, what: str, allowed) -> list:
    """The emotion column as a list; a missing label, or one not in ``allowed`` (None: any text), is an error."""
    labels = table["emotion"].tolist()
    for position, label in enumerate(labels):
        if not isinstance(label, str) or (allowed is not None and label not in allowed):
            shown = "no emotion" if not isinstance(label, str) and pd.isna(label) else f"emotion {label!r}"
            known = "text" if allowed is None else _listing(sorted(allowed))
            raise ValueError(f"{what} {_where(table, position)}: {shown} is not an STR label ({known}); map the "
                             f"dataset's emotions with str_emotion(label, dataset=...) first")
    return labels


def _str_keys(ground_truth: pd.DataFrame, spotted: pd.DataFrame) -> tuple[list, list, bool]:
    """(subject, video) keys when both tables have ``subject``, else (None, video); a ground truth whose
    video names repeat across subjects needs ``subject`` in the spotted intervals too."""
    by_subject = "subject" in ground_truth and "subject" in spotted

    def keys(table):
        videos = table["video"].astype(str).tolist()
        subjects = table["subject"].astype(str).tolist() if by_subject else [None] * len(videos)
        return list(zip(subjects, videos))

    if not by_subject and "subject" in ground_truth and len(ground_truth):
        per_video = ground_truth.groupby(ground_truth["video"].astype(str))["subject"].nunique()
        shared = per_video[per_video > 1]
        if len(shared):
            raise ValueError(f"ground-truth video names repeat across subjects ({_listing(shared.index.tolist())}); "
                             f"give the spotted intervals a 'subject' column")
    return keys(ground_truth), keys(spotted), by_subject


def _check_str_videos(gt_keys: list, sp_keys: list, spotted: pd.DataFrame, videos, by_subject: bool) -> None:
    """Spotted intervals in a video that is neither in the ground truth nor in ``videos`` are an error."""
    known, names = set(gt_keys), set()
    for v in videos if videos is not None else ():
        if isinstance(v, (tuple, list)) and len(v) == 2:
            known.add((str(v[0]), str(v[1])) if by_subject else (None, str(v[1])))
        else:
            names.add(str(v))
    unknown = sorted({k for k in sp_keys if k not in known and k[1] not in names}, key=str)
    if unknown:
        shown = [k[1] if k[0] is None else f"{k[0]}/{k[1]}" for k in unknown]
        unknown_set = set(unknown)
        rows = sum(k in unknown_set for k in sp_keys)
        fix = ("add them to videos= or fix the names" if videos is not None else
               "pass videos= with every video of the set (unannotated ones too) so that they count as false "
               "positives, or fix the names")
        raise ValueError(f"{rows} spotted interval(s) are in videos with no ground truth: {_listing(shown)}; {fix}")


def _positions(keys: list) -> dict:
    groups: dict = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return groups
