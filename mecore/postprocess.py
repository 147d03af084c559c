"""Post-processing that turns per-frame scores or labels into scored intervals.

The conversions between per-frame labels and intervals live here and everything else uses them:
:func:`intervals_to_labels` and :func:`labels_to_intervals`. Intervals are inclusive frame ranges
[onset, offset] in the video's own frame numbers; an interval table is a DataFrame with columns
``onset``, ``offset`` and, as needed, ``video``, ``type`` ("micro"/"macro") and ``score``.

What each paper does with its network output:

* temporal NMS and score thresholds T_CPN, T_CRN (MESNet Sec. III-D, IV-C-4; BiFPN Sec. III):
  :func:`temporal_nms`, :func:`filter_by_score`;
* Yap et al. 2022 "automated IoU" (Sec. 4.1): Butterworth smoothing and a ROC threshold:
  :func:`automated_iou_intervals`;
* Yap et al. 2022 "manual IoU" (Sec. 4.2, after Zhang et al. 2020): Savitzky-Golay smoothing and
  merging of nearby intervals: :func:`manual_iou_intervals`;
* peaks above mean + p (max - mean), at least k apart, spotted as [peak - k, peak + k]
  (Moilanen et al. 2014; SOFTNet): :func:`peak_intervals`;
* STSNet_SW segment merging (Fig. 4) and segment-duration relabelling (Table 4):
  :func:`merge_label_gaps`, :func:`relabel_by_duration`;
* interval length filters (MEGC 2020 baseline): :func:`filter_by_length`;
* proposal labels by IoU with the nearest expression (MESNet Eq. 10) and boundary regression targets and
  their inverse (MESNet Eq. 12), which BiFPN-I3D's classification-regression network reuses:
  :func:`window_labels`, :func:`regression_targets`, :func:`apply_regression`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import butter, filtfilt, find_peaks, savgol_filter

from mecore.metrics import interval_iou, roc_threshold

TYPE_CODES = {"micro": 1, "macro": 2}  # STSNet_SW Fig. 5: 0 no expression, 1 micro, 2 macro
STSNET_MICRO_MAX_FRAMES = {"casme_sq": 15, "samm_lv": 100}  # STSNet_SW Sec. 3.2, Table 4
ME, NON_ME = 0, 1  # class indices of a proposal: MESNet Eq. 10 writes ME as (1, 0)


# ------------------------------------------------------------- labels <-> intervals
def intervals_to_labels(intervals: pd.DataFrame, frame_numbers, by_type: bool = False) -> np.ndarray:
    """Per-frame labels of one video from its intervals.

    ``frame_numbers``: the video's frame numbers, one per label. Returns bools (frame inside any
    interval) or, with ``by_type``, the codes of :data:`TYPE_CODES` (0 = no expression); where a
    micro and a macro interval overlap, the frame is labelled micro (the rarer class).
    """
    frame_numbers = np.asarray(frame_numbers)
    labels = np.zeros(frame_numbers.size, dtype=np.int64)
    rows = intervals.sort_values("type", key=lambda t: t.map(TYPE_CODES), ascending=False) if by_type else intervals
    for row in rows.itertuples(index=False):
        inside = (frame_numbers >= row.onset) & (frame_numbers <= row.offset)
        labels[inside] = TYPE_CODES[row.type] if by_type else 1
    return labels if by_type else labels.astype(bool)


def labels_to_intervals(labels, frame_numbers=None, by_type: bool = False) -> pd.DataFrame:
    """Runs of equal non-zero labels as intervals [onset, offset] (frame numbers, inclusive).

    ``labels``: bools, or :data:`TYPE_CODES` with ``by_type`` (then a ``type`` column is added).
    ``frame_numbers`` defaults to 0, 1, 2, ...
    """
    labels = np.asarray(labels).astype(np.int64)
    frame_numbers = np.arange(labels.size) if frame_numbers is None else np.asarray(frame_numbers)
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [labels.size - 1]])
    keep = labels[starts] != 0 if labels.size else np.zeros(0, bool)
    starts, ends = starts[keep], ends[keep]
    table = pd.DataFrame({"onset": frame_numbers[starts].astype(np.int64), "offset": frame_numbers[ends].astype(np.int64)})
    if by_type:
        names = {code: name for name, code in TYPE_CODES.items()}
        table["type"] = [names[code] for code in labels[starts]]
    return table


# ------------------------------------------------------------- interval operations
def temporal_nms(intervals: pd.DataFrame, t_nms: float, score: str = "score") -> pd.DataFrame:
    """Greedy temporal non-maximum suppression (MESNet Sec. III-D, Table VIII; BiFPN Sec. III).

    Within each video (and type, when present), intervals are visited by decreasing score and one
    is dropped when its IoU with an already kept interval exceeds ``t_nms``.
    """
    keys = [c for c in ("video", "type") if c in intervals]
    kept = []
    for _, group in (intervals.groupby(keys, sort=False) if keys else [(None, intervals)]):
        group = group.sort_values(score, ascending=False, kind="stable")
        onsets, offsets = group["onset"].to_numpy(np.int64), group["offset"].to_numpy(np.int64)
        chosen: list[int] = []
        for i in range(len(group)):
            if not chosen or interval_iou(onsets[i], offsets[i], onsets[chosen], offsets[chosen]).max() <= t_nms:
                chosen.append(i)
        kept.append(group.iloc[chosen])
    return pd.concat(kept).sort_index() if kept else intervals.iloc[:0]


def filter_by_score(intervals: pd.DataFrame, threshold: float, score: str = "score") -> pd.DataFrame:
    """Intervals whose score is at least ``threshold`` (MESNet T_CPN, T_CRN; Sec. IV-C-4, Table VII)."""
    return intervals[intervals[score] >= threshold]


def filter_by_length(intervals: pd.DataFrame, lengths: dict[str, tuple[int, int | None]]) -> pd.DataFrame:
    """Keep intervals whose length in frames lies in ``lengths[type] = (min, max)`` (inclusive).

    ``max`` None means no upper bound. The MEGC 2020 baseline keeps micro intervals of 7-16 frames
    and macro of >= 17 on CAS(ME)^2, 47-105 and >= 106 on SAMM-LV (He et al. 2020, Sec. II-B-3).
    """
    length = intervals["offset"] - intervals["onset"] + 1
    keep = pd.Series(False, index=intervals.index)
    for expression_type, (low, high) in lengths.items():
        keep |= (intervals["type"] == expression_type) & (length >= low) & (length <= (np.inf if high is None else high))
    return intervals[keep]


def merge_nearby_intervals(intervals: pd.DataFrame, max_gap: int, score: str = "score") -> pd.DataFrame:
    """Merge intervals separated by at most ``max_gap`` frames (Zhang et al. 2020; Yap manual IoU).

    Works within each video (and type); overlapping intervals always merge. A merged interval
    keeps the highest score of its parts.
    """
    keys = [c for c in ("video", "type") if c in intervals]
    merged = []
    for _, group in (intervals.groupby(keys, sort=False) if keys else [(None, intervals)]):
        group = group.sort_values("onset", kind="stable")
        rows: list[dict] = []
        for row in group.to_dict("records"):
            if rows and row["onset"] - rows[-1]["offset"] - 1 <= max_gap:
                rows[-1]["offset"] = max(rows[-1]["offset"], row["offset"])
                if score in row:
                    rows[-1][score] = max(rows[-1][score], row[score])
            else:
                rows.append(dict(row))
        merged.append(pd.DataFrame(rows, columns=group.columns))
    return pd.concat(merged, ignore_index=True) if merged else intervals.iloc[:0]


# ------------------------------------------------------------- score curves -> intervals
def normalise(scores) -> np.ndarray:
    """Min-max scaling to [0, 1] (a constant curve becomes all zeros)."""
    scores = np.asarray(scores, dtype=float)
    span = scores.max() - scores.min() if scores.size else 0.0
    return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)


def relative_threshold(scores, p: float) -> float:
    """mean + p (max - mean) (Moilanen et al. 2014; MDMD, Wang et al. 2017; MEGC 2020 baseline)."""
    scores = np.asarray(scores, dtype=float)
    return float(scores.mean() + p * (scores.max() - scores.mean()))


def butterworth_smooth(scores, fps: float, cutoff_hz: float = 2.0, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth low-pass of a per-frame score curve (Yap et al. 2022, Sec. 4.1).

    The paper names the filter but not its order or cut-off: we use order 2 and a 2 Hz cut-off,
    i.e. periods shorter than 0.5 s (the upper limit of a micro-expression) are damped, not removed.
    Curves too short for ``filtfilt`` are returned unchanged.
    """
    scores = np.asarray(scores, dtype=float)
    b, a = butter(order, min(cutoff_hz / (fps / 2), 0.99))
    return filtfilt(b, a, scores) if scores.size > 3 * max(len(a), len(b)) else scores.copy()


def automated_iou_intervals(scores, frame_numbers, fps: float, labels=None, threshold: float | None = None,
                            cutoff_hz: float = 2.0, order: int = 2) -> tuple[pd.DataFrame, float]:
    """Yap et al. 2022 "automated IoU method" (Sec. 4.1) for one video and one type.

    Per-frame scores are normalised to [0, 1], Butterworth-smoothed (:func:`butterworth_smooth`)
    and thresholded; runs at or above the threshold become intervals scored by their peak. The
    threshold is ``threshold`` if given, else the ROC threshold of the smoothed curve against the
    per-frame ``labels`` (:func:`mecore.metrics.roc_threshold`, Youden's J). As in the paper, that
    reads the ground truth; pass a threshold found on other videos to avoid it.
    """
    smooth = butterworth_smooth(normalise(scores), fps, cutoff_hz, order)
    if threshold is None:
        if labels is None:
            raise ValueError("give either a threshold or the per-frame labels to read it off the ROC curve")
        threshold = roc_threshold(labels, smooth)
    return _runs_with_scores(smooth >= threshold, smooth, frame_numbers), float(threshold)


def savgol_smooth(scores, window: int, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing (Zhang et al. 2020; Yap et al. 2022 Sec. 4.2).

    ``window`` frames, made odd (an even window grows by one) and no longer than the curve; a
    curve too short for the polynomial order is returned unchanged.
    """
    scores = np.asarray(scores, dtype=float)
    window = min(window | 1, scores.size if scores.size % 2 else scores.size - 1)
    return savgol_filter(scores, window, polyorder) if window > polyorder else scores.copy()


def manual_iou_intervals(scores, frame_numbers, threshold: float, window: int, polyorder: int = 2,
                         max_gap: int = 0) -> pd.DataFrame:
    """Yap et al. 2022 "manual IoU method" (Sec. 4.2, Zhang et al.'s post-processing).

    Savitzky-Golay smoothing, frames at or above ``threshold``, runs as intervals, then runs at
    most ``max_gap`` frames apart merged. The paper leaves window, order, threshold and merge gap
    as hand-tuned hyperparameters (its own criticism); they are arguments here.
    """
    smooth = savgol_smooth(scores, window, polyorder)
    return merge_nearby_intervals(_runs_with_scores(smooth >= threshold, smooth, frame_numbers), max_gap)


def peak_intervals(scores, frame_numbers, p: float, k: int) -> pd.DataFrame:
    """Peaks above mean + p (max - mean), at least ``k`` frames apart, spotted as [peak - k, peak + k].

    Moilanen et al. 2014 and SOFTNet (Liong et al. 2021): ``scores`` is the (smoothed) per-frame score
    curve of one video. Intervals are clipped to the video's first and last frame. Columns
    ``onset``, ``offset``, ``apex`` (the peak frame) and ``score`` (the peak value).
    """
    scores, frame_numbers = np.asarray(scores, dtype=float), np.asarray(frame_numbers)
    if scores.size == 0:
        return pd.DataFrame({"onset": [], "offset": [], "apex": [], "score": []}).astype({"onset": np.int64, "offset": np.int64, "apex": np.int64})
    peaks, _ = find_peaks(scores, height=relative_threshold(scores, p), distance=max(int(k), 1))
    apex = frame_numbers[peaks].astype(np.int64)
    return pd.DataFrame({
        "onset": np.maximum(apex - k, frame_numbers[0]).astype(np.int64),
        "offset": np.minimum(apex + k, frame_numbers[-1]).astype(np.int64),
        "apex": apex,
        "score": scores[peaks],
    })


def _runs_with_scores(mask, scores, frame_numbers) -> pd.DataFrame:
    """Runs of True in ``mask`` as intervals, each with the highest score inside it."""
    frame_numbers, scores = np.asarray(frame_numbers), np.asarray(scores, dtype=float)
    runs = labels_to_intervals(mask, frame_numbers)
    starts = np.searchsorted(frame_numbers, runs["onset"].to_numpy())
    ends = np.searchsorted(frame_numbers, runs["offset"].to_numpy())
    runs["score"] = [scores[s:e + 1].max() for s, e in zip(starts, ends)]
    return runs


# ------------------------------------------------------------- STSNet_SW on labels
def merge_label_gaps(labels) -> np.ndarray:
    """STSNet_SW segment merging (Fu et al. 2023, Sec. 2.4, Fig. 4).

    A no-expression frame (0) whose two neighbours carry the same expression label takes that
    label. The paper describes a single frame between two labelled neighbours; we apply the rule
    once, on the original labels, so only one-frame gaps are filled (a wider gap is a real pause).
    """
    labels = np.asarray(labels).copy()
    if labels.size < 3:
        return labels
    left, middle, right = labels[:-2], labels[1:-1], labels[2:]
    fill = (middle == 0) & (left != 0) & (left == right)
    labels[1:-1][fill] = left[fill]
    return labels


def relabel_by_duration(labels, frame_numbers, max_micro_frames: int) -> pd.DataFrame:
    """STSNet_SW segment-duration post-processing (Fu et al. 2023, Sec. 3.2, Fig. 5, Table 4).

    Every frame with an expression label (micro or macro) becomes "with expression"; each run of
    such frames is relabelled micro when it lasts at most ``max_micro_frames`` frames, else macro
    (15 on CAS(ME)^2, 100 on SAMM-LV: :data:`STSNET_MICRO_MAX_FRAMES`). Duration is counted in
    frames, offset - onset + 1.
    """
    runs = labels_to_intervals(np.asarray(labels) != 0, frame_numbers)
    length = runs["offset"] - runs["onset"] + 1
    runs["type"] = np.where(length <= max_micro_frames, "micro", "macro")
    return runs


# ------------------------------------------------------------- proposals: labels and boundary regression
def window_labels(bounds: np.ndarray, expressions: np.ndarray,
                  threshold: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 10: a window is ME when its IoU with the nearest (highest-IoU) ME exceeds ``threshold``.

    ``bounds`` (W, 2) and ``expressions`` (E, 2) are inclusive frame intervals. Returns the class per
    window (:data:`ME` / :data:`NON_ME`) and the index of its nearest ME (-1 without any ME).
    """
    if len(expressions) == 0 or len(bounds) == 0:
        return np.full(len(bounds), NON_ME), np.full(len(bounds), -1)
    iou = interval_iou(bounds[:, :1], bounds[:, 1:], expressions[None, :, 0], expressions[None, :, 1])
    nearest = iou.argmax(axis=1)
    positive = iou[np.arange(len(bounds)), nearest] > threshold
    return np.where(positive, ME, NON_ME), np.where(positive, nearest, -1)


def regression_targets(proposals: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Eq. 12's targets ``((a - a')/(b - a), (b - b')/(b - a))`` for proposals [a', b'] and truths [a, b]."""
    proposals, truths = np.asarray(proposals, float), np.asarray(truths, float)
    length = truths[:, 1] - truths[:, 0]
    return np.stack([(truths[:, 0] - proposals[:, 0]) / length, (truths[:, 1] - proposals[:, 1]) / length], axis=1)


def apply_regression(proposals: np.ndarray, offsets: np.ndarray, min_denominator: float = 0.1) -> np.ndarray:
    """The output interval ``[a' + r1 (b - a), b' + r2 (b - a)]`` with ``b - a = (b' - a') / (1 + r1 - r2)``.

    Solving Eq. 12's two target definitions for the unknown true length makes this the exact inverse of
    :func:`regression_targets`. The denominator is floored at ``min_denominator``.
    """
    proposals, offsets = np.asarray(proposals, float), np.asarray(offsets, float)
    length = (proposals[:, 1] - proposals[:, 0]) / np.maximum(1 + offsets[:, 0] - offsets[:, 1], min_denominator)
    return np.stack([proposals[:, 0] + offsets[:, 0] * length, proposals[:, 1] + offsets[:, 1] * length], axis=1)
