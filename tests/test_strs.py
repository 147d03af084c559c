"""STRS (spot-then-recognise score): hand-worked cases from the definition genbing99/STRS-Metric computes.

Spotting: per video, each spotted interval (in row order) takes every free ground truth with IoU >= 0.5
(inclusive frames); TP = pairs, FP = spotted intervals that took none, FN = ground truths never taken;
F1 from the pooled counts. Analysis over the TP pairs whose true emotion is negative, positive or
surprise: per class one-vs-rest precision and recall (0 when 0/0), their means P and R over the three
classes, analysis F1 = 2PR / (P + R). STRS = spotting F1 x analysis F1.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

from mecore.metrics import STR_CLASSES, STR_EMOTION_MAP, STR_LOG_COLUMNS, str_emotion, str_emotions, strs


def table(*rows, subject=False):
    columns = ["subject", "video", "onset", "offset", "emotion"] if subject else ["video", "onset", "offset", "emotion"]
    return pd.DataFrame(list(rows), columns=columns)


GT3 = table(("v1", 10, 19, "negative"), ("v1", 40, 49, "positive"), ("v2", 5, 14, "surprise"))


def test_perfect_spotting_and_recognition_scores_one():
    # 3 TP, 0 FP, 0 FN: spotting P = R = F1 = 1. Each class: TP 1 -> P = R = 1; means 1 -> analysis F1 1.
    r = strs(GT3, GT3.copy())
    assert (r.tp, r.fp, r.fn, r.n_gt, r.n_spotted) == (3, 0, 0, 3, 3)
    assert r.spot_f1 == 1 and r.analysis_f1 == 1 and r.strs == 1
    assert r.per_class["f1"].tolist() == [1.0, 1.0, 1.0]


def test_every_emotion_wrong_gives_spotting_one_and_strs_zero():
    # Same intervals, emotions rotated: spotting F1 1. negative: TP 0, FP 1 (said on the surprise), FN 1;
    # likewise the others: every precision and recall 0 -> P = R = 0 -> analysis F1 0 (STRS-Metric: 0/0,
    # NaN; we follow its own per-class rule, 0) -> STRS 0.
    spotted = GT3.assign(emotion=["positive", "surprise", "negative"])
    r = strs(GT3, spotted)
    assert r.spot_f1 == 1
    assert r.analysis_precision == 0 and r.analysis_recall == 0 and r.analysis_f1 == 0
    assert r.strs == 0
    assert r.per_class[["tp", "fp", "fn"]].to_numpy().tolist() == [[0, 1, 1]] * 3


def test_half_the_ground_truths_missed():
    # GT 4, spotted 2 right ones: TP 2, FP 0, FN 2 -> P 1, R 1/2, F1 2/3. Pairs (neg, neg), (sur, sur):
    # negative P = R = 1; positive no pair: P = R = 0 (its one ground truth was missed, 0/0 -> 0);
    # surprise P = R = 1. Means 2/3 and 2/3 -> analysis F1 2/3. STRS = 4/9.
    gt = table(("v1", 10, 19, "negative"), ("v1", 40, 49, "positive"), ("v2", 5, 14, "surprise"),
               ("v2", 60, 69, "negative"))
    spotted = table(("v1", 10, 19, "negative"), ("v2", 5, 14, "surprise"))
    r = strs(gt, spotted)
    assert (r.tp, r.fp, r.fn) == (2, 0, 2)
    assert r.spot_precision == 1 and r.spot_recall == 0.5 and r.spot_f1 == pytest.approx(2 / 3)
    assert r.analysis_precision == pytest.approx(2 / 3) and r.analysis_recall == pytest.approx(2 / 3)
    assert r.strs == pytest.approx(4 / 9)
    assert (r.log["verdict"] == "FN").sum() == 2


def test_one_spotted_interval_taking_two_ground_truths_is_two_tps():
    # [0, 19] has IoU 10/20 = 0.5 with [0, 9] and with [10, 19]; the official loop has no break, so it takes
    # both: TP 2, FP 0, FN 0 from one spotted interval (spotting F1 1). Pairs (neg said neg), (pos said neg):
    # negative TP 1, FP 1 -> P 1/2, R 1; positive FN 1 -> P 0, R 0; surprise no pair -> 0, 0.
    # P = (1/2)/3 = 1/6, R = 1/3 -> analysis F1 = 2 (1/6)(1/3) / (1/2) = 2/9 = STRS.
    gt = table(("v1", 0, 9, "negative"), ("v1", 10, 19, "positive"))
    spotted = table(("v1", 0, 19, "negative"))
    r = strs(gt, spotted)
    assert (r.tp, r.fp, r.fn, r.n_spotted) == (2, 0, 0, 1)
    assert r.spot_f1 == 1
    assert r.analysis_precision == pytest.approx(1 / 6) and r.analysis_recall == pytest.approx(1 / 3)
    assert r.analysis_f1 == pytest.approx(2 / 9) and r.strs == pytest.approx(2 / 9)
    tp_rows = r.log[r.log["verdict"] == "TP"]
    assert len(tp_rows) == 2 and set(tp_rows["spot_onset"]) == {0}
    assert tp_rows["emotion_correct"].tolist() == [True, False]


def test_video_without_ground_truth_needs_videos_and_its_intervals_are_false_positives():
    # v9 has no annotation. Without videos= its interval is an error, not a silent zero. With it:
    # TP 3, FP 1, FN 0 -> P 3/4, R 1, F1 = 2 (3/4) / (7/4) = 6/7; analysis 1 -> STRS 6/7.
    gt = table(("v1", 10, 19, "negative"), ("v1", 30, 39, "positive"), ("v1", 50, 59, "surprise"))
    spotted = pd.concat([gt, table(("v9", 0, 9, "negative"))], ignore_index=True)
    with pytest.raises(ValueError, match=r"no ground truth: 'v9'.*videos="):
        strs(gt, spotted)
    r = strs(gt, spotted, videos=["v1", "v9"])
    assert (r.tp, r.fp, r.fn) == (3, 1, 0)
    assert r.spot_f1 == pytest.approx(6 / 7) and r.analysis_f1 == 1 and r.strs == pytest.approx(6 / 7)
    fp = r.log[r.log["video"] == "v9"].iloc[0]
    assert fp["verdict"] == "FP" and not fp["hit"] and pd.isna(fp["gt_onset"]) and pd.isna(fp["emotion_correct"])


def test_a_class_never_predicted_enters_the_average_with_zeros():
    # Pairs (neg, neg), (pos said neg), (sur, sur), (sur, sur); positive is never said.
    # negative TP 1, FP 1, FN 0 -> P 1/2, R 1; positive TP 0, FP 0, FN 1 -> P 0/0 = 0, R 0;
    # surprise TP 2 -> P = R = 1. P = 1.5/3 = 1/2, R = 2/3 -> F1 = 2 (1/2)(2/3) / (7/6) = 4/7.
    # UF1 = (2/3 + 0 + 1)/3 = 5/9. Spotting F1 1 -> STRS 4/7.
    gt = table(("v1", 10, 19, "negative"), ("v1", 30, 39, "positive"), ("v1", 50, 59, "surprise"),
               ("v1", 70, 79, "surprise"))
    r = strs(gt, gt.assign(emotion=["negative", "negative", "surprise", "surprise"]))
    positive = r.per_class.set_index("class").loc["positive"]
    assert (positive["tp"], positive["fp"], positive["fn"], positive["precision"], positive["recall"]) == (0, 0, 1, 0, 0)
    assert r.analysis_precision == pytest.approx(1 / 2) and r.analysis_recall == pytest.approx(2 / 3)
    assert r.analysis_f1 == pytest.approx(4 / 7) and r.analysis_uf1 == pytest.approx(5 / 9)
    assert r.strs == pytest.approx(4 / 7)


def test_a_class_absent_from_the_truth_counts_under_the_fixed_list_not_under_classes_none():
    # Only negative and surprise, both right. Fixed list: positive P = R = 0 -> means 2/3 -> F1 2/3.
    # classes=None (STRS-Metric's default: the ground truth's labels): negative, surprise -> F1 1.
    gt = table(("v1", 10, 19, "negative"), ("v1", 30, 39, "surprise"))
    assert strs(gt, gt).analysis_f1 == pytest.approx(2 / 3)
    r = strs(gt, gt, classes=None)
    assert r.classes == ("negative", "surprise") and r.analysis_f1 == 1


def test_others_count_in_spotting_but_not_in_the_analysis():
    # 4 TPs (spotting F1 1); the 'others' pair is left out: 3 analysed pairs, all right -> analysis F1 1.
    gt = table(("v1", 10, 19, "others"), ("v1", 30, 39, "negative"), ("v1", 50, 59, "positive"),
               ("v1", 70, 79, "surprise"))
    r = strs(gt, gt.copy())
    assert (r.tp, r.n_analysed, r.n_not_analysed) == (4, 3, 1) and r.strs == 1
    others = r.per_class.set_index("class").loc["others"]
    assert not others["counted"] and others["support"] == 1 and pd.isna(others["tp"])
    assert r.log.loc[r.log["gt_emotion"] == "others", "analysed"].tolist() == [False]


def test_log_has_a_row_per_spotted_interval_and_per_missed_ground_truth():
    # v1: [10, 19] taken by the first interval; [11, 19] (IoU 0.9) hits it too but it is taken: FP (duplicate);
    # [100, 109] hits nothing: FP; [40, 49] never taken: FN. TP 1, FP 2, FN 1.
    gt = table(("v1", 10, 19, "negative"), ("v1", 40, 49, "positive"))
    spotted = table(("v1", 10, 19, "surprise"), ("v1", 11, 19, "negative"), ("v1", 100, 109, "negative"))
    r = strs(gt, spotted.assign(score=[0.9, 0.8, 0.7]))
    assert list(r.log.columns) == STR_LOG_COLUMNS
    assert r.log["verdict"].tolist() == ["TP", "FP (duplicate)", "FP", "FN"]
    assert r.log["hit"].tolist() == [True, False, False, False]
    assert r.log["iou"].iloc[:3].tolist() == pytest.approx([1.0, 0.9, 0.0]) and pd.isna(r.log["iou"].iloc[3])
    first = r.log.iloc[0]
    assert (first["gt_onset"], first["gt_emotion"], first["spot_emotion"], first["score"]) == (10, "negative", "surprise", 0.9)
    assert not first["emotion_correct"]
    missed = r.log.iloc[3]
    assert (missed["gt_onset"], missed["gt_offset"]) == (40, 49) and pd.isna(missed["spot_onset"])
    assert (r.tp, r.fp, r.fn) == (1, 2, 1)


def test_subjects_key_the_videos_when_both_tables_have_them():
    # CAS(ME)^2 video names repeat across subjects: the interval of subject 2 must not take subject 1's truth.
    gt = table(("1", "anger1", 10, 19, "negative"), ("2", "anger1", 50, 59, "negative"), subject=True)
    spotted = table(("2", "anger1", 10, 19, "negative"), subject=True)
    r = strs(gt, spotted)
    assert (r.tp, r.fp, r.fn) == (0, 1, 2)
    with pytest.raises(ValueError, match="repeat across subjects"):
        strs(gt, spotted.drop(columns="subject"))


def test_all_analysed_pairs_of_one_class_and_right_warns_about_the_official_quirk():
    # One pair (neg, neg): negative P = R = 1, positive and surprise 0 -> P = R = 1/3 -> F1 1/3. STRS-Metric's
    # one-cell confusion matrix would score negative 0 (and its analysis F1 NaN).
    gt = table(("v1", 10, 19, "negative"))
    with pytest.warns(UserWarning, match="STRS-Metric"):
        r = strs(gt, gt)
    assert r.analysis_f1 == pytest.approx(1 / 3)


@pytest.mark.parametrize("change, message", [
    (lambda sp: sp.drop(columns="emotion"), r"no 'emotion' column"),
    (lambda sp: sp.assign(onset=[np.nan, 40, 5]), r"row 0, video 'v1': onset nan is not a frame number"),
    (lambda sp: sp.assign(onset=[30, 40, 5]), r"row 0, video 'v1': offset 19 is before onset 30"),
    (lambda sp: sp.assign(emotion=["happiness", "positive", "surprise"]), r"emotion 'happiness' is not an STR label.*str_emotion"),
    (lambda sp: sp.assign(emotion=[None, "positive", "surprise"]), r"row 0, video 'v1': no emotion"),
    (lambda sp: sp.assign(video=["v1", "V2", "v2"]), r"no ground truth: 'V2'"),
])
def test_bad_input_is_an_error_naming_the_row_and_the_value(change, message):
    with pytest.raises(ValueError, match=message):
        strs(GT3, change(GT3.copy()))


def test_bad_ground_truth_and_arguments_are_errors():
    with pytest.raises(ValueError, match="ground truth row 1, video 'v1': emotion 'joy'"):
        strs(GT3.assign(emotion=["negative", "joy", "surprise"]), GT3)
    with pytest.raises(ValueError, match="t_eval"):
        strs(GT3, GT3, t_eval=0)
    with pytest.raises(ValueError, match="distinct"):
        strs(GT3, GT3, classes=["negative", "negative"])


def test_empty_spotted_intervals_are_all_false_negatives():
    r = strs(GT3, GT3.iloc[:0])
    assert (r.tp, r.fp, r.fn, r.strs) == (0, 0, 3, 0.0)
    assert r.log["verdict"].tolist() == ["FN"] * 3


def test_as_dict_holds_the_numbers():
    d = strs(GT3, GT3).as_dict()
    assert d["strs"] == 1 and d["classes"] == list(STR_CLASSES) and "log" not in d and "per_class" not in d
    assert {"spot_f1", "analysis_f1", "tp", "fp", "fn", "n_gt", "n_spotted"} <= set(d)


# ------------------------------------------------------------------------- emotion mapping
@pytest.mark.parametrize("dataset, label, expected", [
    ("samm", "Happiness", "positive"), ("samm", "Anger", "negative"), ("samm", "Contempt", "negative"),
    ("samm", "Other", "others"), ("samm_lv", "surprise", "surprise"),
    ("casme_sq", "others", "others"), ("casme_sq", "negative", "negative"),
    ("casme2", "repression", "negative"), ("casme2", "disgust", "negative"), ("casme2", "happiness", "positive"),
    ("casme2", "others", "others"), ("smic_hs", "positive", "positive"), ("str", "surprise", "surprise"),
])
def test_str_emotion_maps_each_dataset_vocabulary(dataset, label, expected):
    assert str_emotion(label, dataset=dataset) == expected


def test_str_emotion_errors_name_the_label():
    with pytest.raises(ValueError, match="emotion 'joy' is not a samm emotion"):
        str_emotion("joy", dataset="samm")
    with pytest.raises(ValueError, match="no STR emotion mapping for dataset 'ck'"):
        str_emotion("happy", dataset="ck")
    with pytest.raises(ValueError, match="not text"):
        str_emotion(np.nan, dataset="samm")
    with pytest.raises(ValueError, match="'happiness'"):
        str_emotion("happiness", dataset="casme_sq")


def test_str_emotions_keeps_the_index_and_every_target_is_an_str_label():
    mapped = str_emotions(pd.Series(["Fear", "Happiness"], index=[7, 9]), dataset="samm")
    assert mapped.to_dict() == {7: "negative", 9: "positive"}
    assert all(set(m.values()) <= {*STR_CLASSES, "others"} for m in STR_EMOTION_MAP.values())


def test_no_warning_in_ordinary_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strs(GT3, GT3)
