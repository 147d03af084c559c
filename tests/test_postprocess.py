"""Post-processing: labels <-> intervals, NMS, thresholds, smoothing, peaks, STSNet_SW rules."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mecore.postprocess import (
    automated_iou_intervals,
    butterworth_smooth,
    filter_by_length,
    filter_by_score,
    intervals_to_labels,
    labels_to_intervals,
    manual_iou_intervals,
    merge_label_gaps,
    merge_nearby_intervals,
    peak_intervals,
    relabel_by_duration,
    relative_threshold,
    temporal_nms,
)


def bump(n, centres, width=15, heights=None):
    """A score curve with Hann-shaped bumps of ``width`` frames at ``centres``."""
    curve = np.zeros(n)
    for centre, height in zip(centres, heights or [1.0] * len(centres)):
        curve[centre] = height
    return np.convolve(curve, np.hanning(width), mode="same")


# ----------------------------------------------------------- labels <-> intervals
def test_labels_to_intervals_uses_frame_numbers_inclusively():
    table = labels_to_intervals([0, 1, 1, 0, 1], frame_numbers=[10, 11, 12, 13, 14])
    assert table[["onset", "offset"]].values.tolist() == [[11, 12], [14, 14]]
    assert labels_to_intervals(np.zeros(0, bool)).empty


def test_typed_labels_round_trip():
    table = pd.DataFrame({"onset": [3, 10], "offset": [5, 20], "type": ["micro", "macro"]})
    labels = intervals_to_labels(table, np.arange(30), by_type=True)
    assert labels[3:6].tolist() == [1, 1, 1] and labels[10] == 2 and labels[21] == 0
    pd.testing.assert_frame_equal(labels_to_intervals(labels, np.arange(30), by_type=True), table)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(0, 1000))
def test_bool_labels_round_trip(labels, first_frame):
    frames = np.arange(len(labels)) + first_frame
    table = labels_to_intervals(labels, frames)
    assert intervals_to_labels(table, frames).tolist() == [bool(x) for x in labels]
    assert ((table["offset"] - table["onset"] + 1).sum()) == sum(labels)


# ------------------------------------------------------------ interval operations
def test_temporal_nms_keeps_best_of_overlapping_per_video():
    table = pd.DataFrame({"video": ["a", "a", "a", "b"], "onset": [0, 1, 30, 0], "offset": [10, 11, 40, 10],
                          "score": [0.5, 0.9, 0.1, 0.2]})
    kept = temporal_nms(table, t_nms=0.5)
    assert kept.index.tolist() == [1, 2, 3]
    assert len(temporal_nms(table, t_nms=1.0)) == 4


def test_filters_by_score_and_length():
    table = pd.DataFrame({"onset": [0, 0, 0, 0], "offset": [6, 16, 17, 2], "type": ["micro", "micro", "macro", "macro"],
                          "score": [0.4, 0.6, 0.7, 0.9]})
    assert filter_by_score(table, 0.6).index.tolist() == [1, 2, 3]
    kept = filter_by_length(table, {"micro": (7, 16), "macro": (17, None)})  # MEGC 2020, CAS(ME)^2
    assert kept.index.tolist() == [0, 2]


def test_merge_nearby_intervals():
    table = pd.DataFrame({"video": "v", "onset": [0, 12, 30], "offset": [10, 20, 35], "score": [0.2, 0.8, 0.1]})
    merged = merge_nearby_intervals(table, max_gap=1)
    assert merged[["onset", "offset", "score"]].values.tolist() == [[0, 20, 0.8], [30, 35, 0.1]]
    assert len(merge_nearby_intervals(table, max_gap=0)) == 3


# --------------------------------------------------------- score curves -> intervals
def test_relative_threshold():
    assert relative_threshold([0, 0, 0, 4], 0.5) == pytest.approx(1 + 0.5 * 3)


def test_peak_intervals_are_peak_plus_minus_k():
    scores = bump(200, [50, 120], heights=[1.0, 2.0])
    spotted = peak_intervals(scores, np.arange(200) + 1, p=0.1, k=7)
    assert spotted["apex"].tolist() == [51, 121]
    assert spotted[["onset", "offset"]].values.tolist() == [[44, 58], [114, 128]]
    clipped = peak_intervals(bump(30, [2]), np.arange(30), p=0.5, k=7)
    assert clipped[["onset", "offset"]].values.tolist() == [[0, 9]]


def test_peaks_at_least_k_apart():
    scores = bump(100, [40, 44], width=3)
    assert len(peak_intervals(scores, np.arange(100), p=0.0, k=10)) == 1
    assert len(peak_intervals(scores, np.arange(100), p=0.0, k=2)) == 2


def test_butterworth_smooths_noise_away():
    rng = np.random.default_rng(0)
    clean = bump(300, [100, 200], width=31)
    noisy = clean + rng.normal(0, 0.2, clean.size)
    smooth = butterworth_smooth(noisy, fps=30, cutoff_hz=2.0)
    assert np.abs(smooth - clean).mean() < 0.5 * np.abs(noisy - clean).mean()


def test_automated_iou_finds_the_bumps():
    rng = np.random.default_rng(1)
    labels = np.zeros(300, bool)
    labels[90:111] = labels[190:211] = True
    scores = bump(300, [100, 200], width=31) + rng.normal(0, 0.05, 300)
    spotted, threshold = automated_iou_intervals(scores, np.arange(300), fps=30, labels=labels)
    assert 0 < threshold < 1
    assert spotted[["onset", "offset"]].values.tolist() == [[90, 110], [190, 210]]
    with pytest.raises(ValueError):
        automated_iou_intervals(scores, np.arange(300), fps=30)


def test_manual_iou_merges_split_detections():
    scores = bump(200, [50, 60], width=9)  # two bumps 10 frames apart
    assert len(manual_iou_intervals(scores, np.arange(200), threshold=0.5, window=5, max_gap=0)) == 2
    assert len(manual_iou_intervals(scores, np.arange(200), threshold=0.5, window=5, max_gap=8)) == 1


# ---------------------------------------------------------------- STSNet_SW rules
def test_segment_merging_fills_single_frame_gaps():
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1, 2, 0, 2])
    assert merge_label_gaps(labels).tolist() == [0, 1, 1, 1, 1, 0, 0, 1, 2, 2, 2]


def test_segment_duration_relabels_micro_and_macro():
    labels = np.array([0] + [2] * 3 + [0] + [1, 2] * 3 + [0])  # a short macro, a long mixed run
    table = relabel_by_duration(labels, np.arange(labels.size), max_micro_frames=5)
    assert table.values.tolist() == [[1, 3, "micro"], [5, 10, "macro"]]
