"""Spotting and recognition metrics: worked examples, paper tables recomputed, properties."""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mecore.metrics import (
    SPOTTING_CONVENTIONS,
    compare_conventions,
    frame_level_metrics,
    interval_iou,
    iou_matrix,
    mesnet_ratios,
    ratios_from_counts,
    recognition_metrics,
    spotting_counts,
    spotting_log,
    stsnet_ratios,
)
from mecore import references

# The generated examples spot in videos without ground truth on purpose (false positives count there); the
# warning that names such videos is tested once, in test_spotted_intervals_nothing_can_score_are_named_in_a_warning.
pytestmark = pytest.mark.filterwarnings("ignore:.*spotted intervals are in videos not in:UserWarning")

# The papers' printed tables come from mecore.references (references, not outputs): MESNet (Wang et al. 2021)
# Table X, with its MEs (m) per dataset family, and STSNet_SW (Fu et al. 2023) Tables 2-4.
STSNET_NUMBERS = ("2", "3", "4")
# Cells of Table X that its own counts do not reproduce, and why (see notebook 03 and
# mecore.references.INCONSISTENT).
MESNET_TABLE_X_INCONSISTENT = {
    ("casme_sq", "General", "mesnet_crn", "f1"),  # F1 fits Prediction = 871 (Tables VI, VIII)
    ("casme_sq", "General", "ltp_ml", "recall"),  # recall and F1 fit Find = 3, not 4
    ("casme_sq", "General", "ltp_ml", "f1"),
    ("casme_sq", "High F1-score", "ltp_ml", "recall"),
    ("casme_sq", "High F1-score", "ltp_ml", "f1"),
    ("casme_sq", "High F1-score", "mesnet_cpn", "precision"),  # printed F1 fits b/n = 14/935, not 0.024
    ("casme_sq", "High F1-score", "mesnet_crn", "precision"),  # printed F1 fits b/n = 9/438, not 0.032
}


def agrees(value: float, printed: float, decimals: int) -> bool:
    """``value`` equals ``printed`` to its printed number of ``decimals`` (either rounding rule)."""
    return abs(value - printed) <= 0.5 * 10 ** -decimals + 1e-12


def intervals(rows, video="v", expression_type="micro", score=None):
    table = pd.DataFrame(rows, columns=["onset", "offset"])
    table.insert(0, "video", video)
    table["type"] = expression_type
    if score is not None:
        table["score"] = score
    return table


# ------------------------------------------------------------------------------ IoU
def test_iou_counts_frames_inclusively():
    assert interval_iou(5, 5, 5, 5) == 1.0
    assert interval_iou(1, 2, 3, 4) == 0.0
    assert interval_iou(0, 9, 5, 14) == pytest.approx(5 / 15)
    assert interval_iou(0, 9, 0, 4) == pytest.approx(0.5)


bounds = st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=200, deadline=None)
@given(bounds, bounds)
def test_iou_is_symmetric_and_in_unit_interval(a, b):
    forward, backward = interval_iou(*a, *b), interval_iou(*b, *a)
    assert forward == backward
    assert 0.0 <= forward <= 1.0
    assert (forward == 1.0) == (a == b)


# --------------------------------------------------------------- worked examples
def fig6():
    """MESNet Fig. 6: two ground truths, three spotted; the last two hit the second ground truth."""
    gt = intervals([(10, 30), (60, 80)])
    spotted = intervals([(35, 50), (58, 78), (62, 82)], score=[0.9, 0.8, 0.7])
    return gt, spotted


def test_fig6_under_each_convention():
    gt, spotted = fig6()
    table = compare_conventions(gt, spotted)
    micro = {c: table.loc[(c, "micro")] for c in SPOTTING_CONVENTIONS}
    assert micro["mesnet"][["precision", "recall"]].tolist() == pytest.approx([2 / 3, 1 / 2])  # Sec. IV-A-2
    assert micro["stsnet"][["precision", "recall"]].tolist() == pytest.approx([2 / 3, 2 / 2])  # the MEGC 2019 rule
    for convention in ("megc2020", "greedy"):
        assert micro[convention][["tp", "fp", "fn"]].tolist() == [1, 2, 1]
    assert micro["mesnet"]["f1"] == pytest.approx(2 * 1 * 2 / (1 * 3 + 2 * 2))


def test_log_explains_the_counts():
    gt, spotted = fig6()
    log = spotting_log(gt, spotted, "megc2020")
    assert log["verdict"].tolist() == ["FP", "TP", "FP (duplicate)", "FN"]
    assert log.loc[1, ["gt_onset", "gt_offset"]].tolist() == [60, 80]
    assert spotting_log(gt, spotted, "mesnet")["verdict"].tolist() == ["FP", "TP", "TP", "FN"]


def test_greedy_takes_spotted_intervals_by_score():
    gt = intervals([(10, 20)])
    spotted = intervals([(10, 19), (10, 20)], score=[0.2, 0.9])
    log = spotting_log(gt, spotted, "greedy")
    assert log["verdict"].tolist() == ["FP (duplicate)", "TP"]


def test_only_videos_with_gt_drops_their_false_positives():
    gt = intervals([(10, 20)], video="a")
    spotted = pd.concat([intervals([(10, 20)], video="a"), intervals([(50, 60)], video="b")])
    assert spotting_counts(gt, spotted, "greedy").loc["micro", "fp"] == 1
    assert spotting_counts(gt, spotted, "greedy", only_videos_with_gt=True).loc["micro", "fp"] == 0


def test_types_are_scored_separately_and_summed_overall():
    gt = pd.concat([intervals([(0, 9)]), intervals([(100, 149)], expression_type="macro")])
    spotted = pd.concat([intervals([(0, 9)], expression_type="macro"), intervals([(100, 149)], expression_type="macro")])
    table = spotting_counts(gt, spotted)
    assert table.loc["micro", ["tp", "fp", "fn"]].tolist() == [0, 0, 1]
    assert table.loc["macro", ["tp", "fp", "fn"]].tolist() == [1, 1, 0]
    assert table.loc["overall", ["tp", "fp", "fn"]].tolist() == [1, 1, 1]


def test_t_eval_is_a_parameter():
    gt, spotted = intervals([(0, 9)]), intervals([(0, 5)])  # IoU 0.6
    assert spotting_counts(gt, spotted, t_eval=0.5).loc["micro", "tp"] == 1
    assert spotting_counts(gt, spotted, t_eval=0.7).loc["micro", "tp"] == 0


def test_unknown_convention_raises():
    gt, spotted = fig6()
    with pytest.raises(ValueError, match="convention"):
        spotting_counts(gt, spotted, "megc2019")


# ------------------------------------------------------------- paper tables
def test_mesnet_table_x_recomputed_from_its_counts():
    ref, mismatched = references.reference("mesnet", "X"), set()
    for family in ref.values:
        m = ref.ground_truths[family]
        for (selection, method), row in references.table("mesnet", "X", family).iterrows():
            ours = mesnet_ratios(found=int(row["Find"]), hits=int(row["TP"]), n_gt=m,
                                 n_spotted=int(row["Prediction"]))
            for name, column in (("recall", "recall"), ("precision", "precision"), ("f1", "F1")):
                if not agrees(ours[name], row[column], ref.printed_decimals(column)):
                    mismatched.add((family, selection, method, name))
    assert mismatched == MESNET_TABLE_X_INCONSISTENT


def test_mesnet_table_x_inconsistencies_have_the_stated_explanations():
    ref, x = references.reference("mesnet", "X"), references.table("mesnet", "X", "casme_sq")
    m = ref.ground_truths["casme_sq"]
    crn, ltp = x.loc[("General", "mesnet_crn")], x.loc[("General", "ltp_ml")]
    crn_n = references.table("mesnet", "VIII", "casme_sq").loc[0.50, "R-p"]  # the CRN's Prediction, Tables VI, VIII
    ours = mesnet_ratios(found=int(crn["Find"]), hits=int(crn["TP"]), n_gt=m, n_spotted=int(crn_n))
    assert agrees(ours["f1"], crn["F1"], ref.printed_decimals("F1"))
    corrected = mesnet_ratios(found=3, hits=int(ltp["TP"]), n_gt=m, n_spotted=int(ltp["Prediction"]))  # Find = 3
    assert agrees(corrected["recall"], ltp["recall"], ref.printed_decimals("recall"))
    assert agrees(corrected["f1"], ltp["F1"], ref.printed_decimals("F1"))


def test_stsnet_tables_recomputed_from_their_counts():
    checked = 0
    for number in STSNET_NUMBERS:
        ref = references.reference("stsnet_sw", number)
        for family in ref.values:
            rows = references.table("stsnet_sw", number, family)
            for kind, row in rows.iterrows():
                total, tp, fp, fn = (int(row[c]) for c in ("Total", "TP", "FP", "FN"))
                for ours in (ratios_from_counts(tp, fp, fn), stsnet_ratios(tp, n_gt=tp + fn, n_spotted=tp + fp)):
                    for name, column in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1-score")):
                        assert agrees(ours[name], row[column], ref.printed_decimals(column)), (number, family, kind)
                assert tp + fn == total
                checked += 1
            counts = rows[["Total", "TP", "FP", "FN"]]  # overall = macro + micro (Eqs. 13-14)
            assert (counts.loc["macro"] + counts.loc["micro"] == counts.loc["overall"]).all()
    assert checked == 18


# ------------------------------------------------------------------ properties
@st.composite
def ground_truth_and_spotted(draw):
    """Non-overlapping ground truths in two videos and spotted intervals around them."""
    gt_rows, spotted_rows = [], []
    for video in ("a", "b"):
        start = draw(st.integers(0, 20))
        for _ in range(draw(st.integers(0, 4))):
            length = draw(st.integers(1, 30))
            gt_rows.append((video, start, start + length - 1, draw(st.sampled_from(["micro", "macro"]))))
            start += length + draw(st.integers(1, 30))
        for _, onset, offset, kind in [row for row in gt_rows if row[0] == video]:
            for _ in range(draw(st.integers(0, 2))):  # near copies of a ground truth, which may hit it
                shift, stretch = draw(st.integers(-5, 5)), draw(st.integers(-3, 3))
                spotted_rows.append((video, max(onset + shift, 0), max(offset + shift + stretch, onset + shift, 0), kind))
        for _ in range(draw(st.integers(0, 4))):
            onset = draw(st.integers(0, 200))
            spotted_rows.append((video, onset, onset + draw(st.integers(0, 30)), draw(st.sampled_from(["micro", "macro"]))))
    gt = pd.DataFrame(gt_rows, columns=["video", "onset", "offset", "type"])
    spotted = pd.DataFrame(spotted_rows, columns=["video", "onset", "offset", "type"])
    spotted["score"] = draw(st.lists(st.floats(0, 1), min_size=len(spotted), max_size=len(spotted)))
    return gt, spotted


@settings(max_examples=40, deadline=None)
@given(ground_truth_and_spotted())
def test_perfect_predictions_give_f1_one_under_every_convention(data):
    gt, _ = data
    perfect = gt.assign(score=1.0)
    for convention in SPOTTING_CONVENTIONS:
        table = spotting_counts(gt, perfect, convention)
        for kind in ("micro", "macro", "overall"):
            if table.loc[kind, "n_gt"]:
                assert table.loc[kind, ["precision", "recall", "f1"]].tolist() == [1.0, 1.0, 1.0], convention


@settings(max_examples=40, deadline=None)
@given(ground_truth_and_spotted(), st.integers(300, 400), st.sampled_from(["micro", "macro"]))
def test_adding_a_non_overlapping_spotted_interval_never_raises_precision(data, onset, kind):
    gt, spotted = data
    extra = pd.concat([spotted, pd.DataFrame([("a", onset, onset + 5, kind, 0.5)], columns=spotted.columns)], ignore_index=True)
    for convention in SPOTTING_CONVENTIONS:
        before = spotting_counts(gt, spotted, convention).loc[kind, "precision"]
        after = spotting_counts(gt, extra, convention).loc[kind, "precision"]
        assert np.isnan(before) or after <= before


@settings(max_examples=60, deadline=None)
@given(ground_truth_and_spotted(), st.sampled_from([0.3, 0.5, 0.7]))
def test_conventions_agree_when_every_ground_truth_has_at_most_one_hit(data, t_eval):
    gt, spotted = data
    for (video, kind), gt_group in gt.groupby(["video", "type"]):
        sp_group = spotted[(spotted["video"] == video) & (spotted["type"] == kind)]
        hit = iou_matrix(sp_group, gt_group) >= t_eval
        if (hit.sum(axis=0) > 1).any() or (hit.sum(axis=1) > 1).any():
            return  # several hits: the conventions may rightly differ
    table = compare_conventions(gt, spotted, t_eval)
    columns = ["tp", "fp", "fn", "precision", "recall", "f1"]
    reference = table.loc["megc2020", columns]
    for convention in SPOTTING_CONVENTIONS[1:]:
        pd.testing.assert_frame_equal(table.loc[convention, columns], reference, check_dtype=False)


@settings(max_examples=40, deadline=None)
@given(ground_truth_and_spotted())
def test_log_verdicts_tally_with_the_counts(data):
    gt, spotted = data
    for convention in ("megc2020", "greedy", "mesnet"):
        log, table = spotting_log(gt, spotted, convention), spotting_counts(gt, spotted, convention)
        for kind in ("micro", "macro"):
            verdicts = log.loc[log["type"] == kind, "verdict"]
            assert (verdicts == "TP").sum() == table.loc[kind, "tp"]
            assert verdicts.str.startswith("FP").sum() == table.loc[kind, "fp"]
            assert (verdicts == "FN").sum() == table.loc[kind, "fn"]


# ----------------------------------------------------------------- frame level
def test_frame_level_metrics():
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)
    perfect = frame_level_metrics(labels, labels * 0.8 + 0.1)
    assert perfect["f1"] == 1.0 and perfect["auc"] == 1.0
    noisy = frame_level_metrics(labels, [0.1, 0.6, 0.7, 0.9, 0.2, 0.1, 0.4, 0.3], threshold=0.5)
    assert noisy["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert noisy["auc"] == pytest.approx(14 / 15)
    assert np.isnan(frame_level_metrics(np.zeros(4, bool), np.arange(4.0), threshold=1)["auc"])


# ----------------------------------------------------------------- recognition
def test_recognition_pooled_and_per_fold():
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a"]
    folds = [1, 1, 1, 2, 2, 2]
    pooled = recognition_metrics(y_true, y_pred)
    assert pooled.accuracy == pytest.approx(4 / 6)
    assert pooled.uar == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert pooled.uf1 == pytest.approx(np.mean(f1))
    assert pooled.confusion.loc["a", "b"] == 1
    per_fold = recognition_metrics(y_true, y_pred, folds=folds, averaging="per_fold")
    assert per_fold.averaging == "per_fold"
    assert per_fold.accuracy == pytest.approx(np.mean([2 / 3, 2 / 3]))
    assert per_fold.per_fold["absent_classes"].tolist() == [["c"], ["a"]]
    assert per_fold.uar != pytest.approx(pooled.uar)


def test_absent_class_is_reported_or_raises():
    with pytest.warns(UserWarning, match="absent"):
        result = recognition_metrics(["a", "b"], ["a", "a"], classes=["a", "b", "c"])
    assert result.absent_classes == ["c"]
    assert np.isnan(result.per_class.loc["c", "recall"])
    assert result.uar == pytest.approx(0.5)
    with pytest.raises(ValueError, match="absent"):
        recognition_metrics(["a", "b"], ["a", "a"], classes=["a", "b", "c"], on_absent="raise")


def test_interval_iou_rounds_fractional_bounds():
    """A resampled clip's bounds are fractional: they are rounded to the nearest frame, never truncated."""
    assert interval_iou(0.6, 2.4, 1, 2) == 1.0  # [1, 2] against [1, 2]; truncation would give [0, 2]: 2/3
    assert interval_iou(2.5, 3.49, 2, 3) == 1.0  # 2.5 rounds half to even: [2, 3]


# ------------------------------------------------------------- edges (differential against the MEGC 2020 code)
def megc2020_baseline(gt: pd.DataFrame, spotted: pd.DataFrame, t_eval: float = 0.5) -> dict[str, float]:
    """The MEGC 2020 baseline's arithmetic, as a reference: per video and type, found = ground truths hit by any
    spotted interval; summed; precision = found / spotted, recall = found / ground truths."""
    found = n_spotted = n_gt = 0
    for (video, kind), rows in gt.groupby(["video", "type"]):
        sp = spotted[(spotted["video"] == video) & (spotted["type"] == kind)]
        found += int((iou_matrix(sp, rows) >= t_eval).any(axis=0).sum()) if len(sp) else 0
    n_spotted, n_gt = len(spotted), len(gt)
    precision, recall = found / n_spotted, found / n_gt
    return {"tp": found, "precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall)}


def one_interval_finds_two():
    """Video v: two overlapping ground truths, one spotted interval hitting both (IoU 1 and 19/21); video w: a
    ground truth missed by a false positive."""
    gt = pd.concat([intervals([(10, 30), (12, 30)], video="v"), intervals([(200, 210)], video="w")],
                   ignore_index=True)
    spotted = pd.concat([intervals([(10, 30)], video="v", score=[0.9]),
                         intervals([(100, 110)], video="w", score=[0.5])], ignore_index=True)
    return gt, spotted


def test_megc2020_follows_the_baseline_when_one_spotted_interval_finds_two_ground_truths():
    gt, spotted = one_interval_finds_two()
    table = spotting_counts(gt, spotted, "megc2020")
    reference = megc2020_baseline(gt, spotted)
    assert table.loc["micro", "tp"] == reference["tp"] == 2
    assert table.loc["micro", "fp"] == 0  # v: 1 - 2 = -1 (the baseline's FP, not clipped to 0), w: 1
    assert table.loc["micro", "precision"] == pytest.approx(2 / 2)  # clipped FP gave 2 / 3
    for name in ("precision", "recall", "f1"):
        assert table.loc["micro", name] == pytest.approx(reference[name]), name


def test_megc2020_log_shows_every_counted_true_positive():
    gt, spotted = one_interval_finds_two()
    log = spotting_log(gt, spotted, "megc2020")
    table = spotting_counts(gt, spotted, "megc2020")
    tps = log[log["verdict"] == "TP"]
    assert len(tps) == table.loc["micro", "tp"] == 2
    assert sorted(tps["gt_onset"].tolist()) == [10, 12] and tps["spot_onset"].tolist() == [10, 10]
    assert (log["verdict"] == "FN").sum() == table.loc["micro", "fn"] == 1


@settings(max_examples=40, deadline=None)
@given(ground_truth_and_spotted(), st.sampled_from([0.2, 0.3, 0.5]))
def test_megc2020_log_and_counts_reconcile_at_any_threshold(data, t_eval):
    gt, spotted = data
    twins = gt.assign(onset=gt["onset"] + 1)  # overlapping ground truths: one spotted interval can find two
    gt = pd.concat([gt, twins[twins["onset"] <= twins["offset"]]], ignore_index=True)
    # identical spotted intervals cannot be told apart in the log, so the count of extra TP rows below needs
    # distinct ones
    spotted = spotted.drop_duplicates(["video", "onset", "offset", "type", "score"]).reset_index(drop=True)
    log, table = spotting_log(gt, spotted, "megc2020", t_eval), spotting_counts(gt, spotted, "megc2020", t_eval)
    for kind in ("micro", "macro"):
        rows = log[log["type"] == kind]
        tp_rows = rows[rows["verdict"] == "TP"]
        assert len(tp_rows) == table.loc[kind, "tp"]
        assert (rows["verdict"] == "FN").sum() == table.loc[kind, "fn"]
        extra = len(tp_rows) - len(tp_rows.drop_duplicates(["video", "spot_onset", "spot_offset", "score"]))
        assert rows["verdict"].str.startswith("FP").sum() == table.loc[kind, "fp"] + extra


def test_spotted_intervals_nothing_can_score_are_named_in_a_warning():
    gt = intervals([(10, 20)], video="15_0101")
    typo = intervals([(10, 20)], video="15_O101")
    with pytest.warns(UserWarning, match="1 spotted intervals are in videos not in the ground truth.*'15_O101'"):
        spotting_counts(gt, typo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spotting_counts(gt, typo, videos=["15_0101", "15_O101"])  # a video known to have no expression
    odd_type = intervals([(10, 20)], video="15_0101", expression_type="mikro")
    with pytest.warns(UserWarning, match="type other than micro/macro and are not scored: types 'mikro'"):
        table = spotting_counts(gt, odd_type)
    assert table.loc["overall", "n_spotted"] == 0


def test_an_interval_ending_before_it_starts_is_an_error_naming_the_row():
    gt = intervals([(10, 20)], video="a")
    with pytest.raises(ValueError, match=r"spotted interval row 1, video 'a': offset 5 is before onset 9"):
        spotting_counts(gt, intervals([(10, 20), (9, 5)], video="a"))
    with pytest.raises(ValueError, match=r"ground truth row 0, video 'a': offset 3 is before onset 4"):
        spotting_log(intervals([(4, 3)], video="a"), gt)
    missing = intervals([(10, 20)], video="a").astype({"onset": float})
    missing.loc[0, "onset"] = np.nan
    with pytest.raises(ValueError, match="onset nan is not a frame number"):
        spotting_counts(gt, missing)


def test_fractional_frame_numbers_are_rounded_in_the_counts():
    gt = intervals([(2, 3)])
    spotted = intervals([(1.6, 2.6)])  # [2, 3] rounded; truncated it was [1, 2], IoU 1/3, a miss
    assert spotting_counts(gt, spotted).loc["micro", "tp"] == 1
    assert spotting_log(gt, spotted)["spot_onset"].tolist() == [2]


def test_interval_iou_differs_from_the_quoted_megc_formula_as_documented():
    def quoted(on1, off1, on2, off2):  # (inter + 1) / (len1 + len2 - inter), exclusive lengths
        len1, len2, inter = off1 - on1, off2 - on2, min(off1, off2) - max(on1, on2)
        return (inter + 1) / (len1 + len2 - inter) if len1 + len2 - inter else float("inf")

    assert interval_iou(5, 5, 5, 5) == 1.0 and quoted(5, 5, 5, 5) == float("inf")  # single frames: 1 / 0
    assert interval_iou(1, 2, 2, 3) == pytest.approx(1 / 3) and quoted(1, 2, 2, 3) == 0.5  # touching
    assert interval_iou(1, 2, 3, 4) == 0.0 == quoted(1, 2, 3, 4)  # adjacent
    assert quoted(1, 2, 5, 6) < 0 == interval_iou(1, 2, 5, 6)
    assert quoted(1, 10, 1, 10) == pytest.approx(10 / 9)  # identical, L = 10: L / (L - 1)
    assert quoted(0, 9, 5, 14) == pytest.approx(interval_iou(0, 9, 5, 14) * 15 / 14)  # U / (U - 1) times
