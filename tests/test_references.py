"""The papers' published numbers (mecore.references): every table names its paper, table and datasets; every F1,
precision and recall follows from the same table's other numbers within the printed rounding, and every number
printed twice in a paper agrees, except the cells mecore.references.INCONSISTENT lists with their explanation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mecore import references
from mecore.data import DATASET_NAMES
from mecore.data.dataset import dataset_family
from mecore.references import INCONSISTENT, PAPERS, TABLES, reference, table

FAMILIES = {dataset_family(name) for name in DATASET_NAMES}
ROLES = {"precision", "recall", "f1", "tp", "fp", "fn", "n", "m", "found"}
SCORE_CHECKS = ("F1 = 2PR/(P+R)", "P = TP/prediction", "R = found/ground truths", "F1 from counts",
                "ground truths = TP + FN")


def frames(ref):
    """(family, DataFrame) of every dataset key of ``ref`` (None for a table spanning several datasets)."""
    return [(family, table(ref.paper, ref.number, family)) for family in ref.values]


def f1_of(precision, recall):
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_problems(ref, family, frame) -> set:
    """The (paper, table, family, row, group, check) of every printed score of ``frame`` that does not follow from
    its other printed numbers within the printed rounding; the number of checks made."""
    problems, checked = set(), 0
    for group, roles in ref.scores.items():
        half = {role: 0.5 * 10.0 ** -ref.printed_decimals(column) + 1e-9 for role, column in roles.items()
                if role in ("precision", "recall", "f1")}
        for row, values in frame.iterrows():
            v = {role: values[column] for role, column in roles.items()}
            if any(pd.isna(x) for x in v.values()):
                continue
            m = v.get("m", ref.ground_truths.get(family))
            if m is None and "fn" in v:
                m = v["tp"] + v["fn"]
            n = v.get("n", v["tp"] + v["fp"] if "fp" in v and "tp" in v else None)
            found = v.get("found", v.get("tp"))
            checks = {}
            if {"precision", "recall", "f1"} <= set(v):
                low = f1_of(max(v["precision"] - half["precision"], 0), max(v["recall"] - half["recall"], 0))
                high = f1_of(v["precision"] + half["precision"], v["recall"] + half["recall"])
                checks["F1 = 2PR/(P+R)"] = low - half["f1"] <= v["f1"] <= high + half["f1"]
            if "precision" in v and "tp" in v and n is not None:
                checks["P = TP/prediction"] = abs(v["tp"] / n - v["precision"]) <= half["precision"]
            if "recall" in v and found is not None and m is not None:
                checks["R = found/ground truths"] = abs(found / m - v["recall"]) <= half["recall"]
            if "f1" in v and "tp" in v and n is not None and m is not None:
                counted = 0.0 if found * v["tp"] == 0 else 2 * found * v["tp"] / (found * n + v["tp"] * m)
                checks["F1 from counts"] = abs(counted - v["f1"]) <= half["f1"]
            if {"m", "tp", "fn"} <= set(v):
                checks["ground truths = TP + FN"] = v["m"] == v["tp"] + v["fn"]
            checked += len(checks)
            problems |= {(ref.paper, ref.number, family, row, group, name) for name, ok in checks.items() if not ok}
    return problems, checked


def test_every_table_names_its_paper_table_and_existing_datasets():
    assert len(TABLES) >= 25
    for (paper, number), ref in TABLES.items():
        assert (ref.paper, ref.number) == (paper, number) and paper in PAPERS
        assert ref.source.startswith(PAPERS[paper]) and ref.source.endswith(number), ref.source
        assert ref.caption and ref.datasets and set(ref.datasets) <= FAMILIES, (paper, number, ref.datasets)
        if ref.per_family:
            assert tuple(ref.values) == ref.datasets
        for family, frame in frames(ref):
            assert isinstance(frame, pd.DataFrame) and frame.size > 0, (paper, number, family)
            numbers = frame.select_dtypes("number")
            assert numbers.shape[1] > 0 and np.isfinite(numbers.to_numpy(float)[~numbers.isna().to_numpy()]).all()
            assert frame.index.is_unique and frame.columns.is_unique, (paper, number, family)


def test_tables_are_new_copies():
    first = table("stsnet_sw", "2", "casme_sq")
    first.iloc[0, 0] = -1
    assert table("stsnet_sw", "2", "casme_sq").iloc[0, 0] == 300
    settings = table("fr", "6", "cde")
    settings.loc["FR", "uf1"] = 0
    assert table("fr", "6", "cde").loc["FR", "uf1"] == 0.7838


def test_score_roles_name_printed_columns():
    scored = [ref for ref in TABLES.values() if ref.scores]
    assert {(r.paper, r.number) for r in scored} >= {("mesnet", "IV"), ("mesnet", "VIII"), ("mesnet", "X"),
                                                     ("bifpn_i3d", "I"), ("stsnet_sw", "2"), ("stsnet_sw", "3"),
                                                     ("stsnet_sw", "4")}
    for ref in scored:
        for family, frame in frames(ref):
            for group, roles in ref.scores.items():
                assert set(roles) <= ROLES, (ref.source, roles)
                assert set(roles.values()) <= set(frame.columns), (ref.source, family, group)
                for role, column in roles.items():
                    if role in ("precision", "recall", "f1"):
                        assert ref.printed_decimals(column) in (2, 3, 4), (ref.source, column)
    # every table printing precision, recall or F1 beside counts has its scores declared
    for ref in TABLES.values():
        for family, frame in frames(ref):
            columns = {str(c) for c in frame.columns}
            counted = {"TP", "Precision"} <= columns or {"TP", "precision"} <= columns or {"C-tp", "C-p"} <= columns
            assert ref.scores or not counted, (ref.source, family)


def test_printed_scores_follow_from_the_tables_own_numbers():
    problems, checked = set(), 0
    for ref in TABLES.values():
        for family, frame in frames(ref):
            found, count = score_problems(ref, family, frame)
            problems |= found
            checked += count
    assert checked >= 246, checked  # 16 (MESNet IV) + 80 (X) + 48 (VIII) + 12 (He I) + 90 (Fu 2-4)
    expected = {key for key in INCONSISTENT if key[-1] in SCORE_CHECKS}
    assert problems - expected == set(), "printed numbers that do not follow from their table (new?)"
    assert expected - problems == set(), "listed as inconsistent but consistent: remove from INCONSISTENT"


def test_the_checks_catch_a_wrong_number():
    ref = reference("stsnet_sw", "2")
    frame = table("stsnet_sw", "2", "samm_lv")
    assert score_problems(ref, "samm_lv", frame)[0] == set()
    wrong = frame.copy()
    wrong.loc["micro", "F1-score"] = 0.6101  # printed 0.6091
    assert {key[-1] for key in score_problems(ref, "samm_lv", wrong)[0]} == {"F1 = 2PR/(P+R)", "F1 from counts"}
    wrong = frame.copy()
    wrong.loc["macro", "TP"] = 168
    checks = {key[-1] for key in score_problems(ref, "samm_lv", wrong)[0]}
    assert {"P = TP/prediction", "ground truths = TP + FN"} <= checks
    ref = reference("mesnet", "VIII")
    wrong = table("mesnet", "VIII", "samm_lv")
    wrong.loc[0.05, "R-s"] = 0.051  # MESNet's F1 with the paper's m = 159 MEs is 0.049
    assert score_problems(ref, "samm_lv", wrong)[0] == {("mesnet", "VIII", "samm_lv", 0.05, "CRN", "F1 from counts")}


def copies_that_differ() -> set:
    """(paper, table, family, row, group, "= ...") of every number a paper prints twice with two values."""
    differ = set()

    def same(key, a, b):
        if not (a == b or (isinstance(a, float) and math.isclose(a, b, abs_tol=1e-12))):
            differ.add(key)

    for family in ("casme_sq", "samm_lv"):
        iv, x = table("mesnet", "IV", family), table("mesnet", "X", family)
        v, vi = table("mesnet", "V", family), table("mesnet", "VI", family)
        viii, ix = table("mesnet", "VIII", family), table("mesnet", "IX", family)
        vii, settings = table("mesnet", "VII", family), table("mesnet", "X settings", family)
        for stage, letter in (("CPN", "C"), ("CRN", "R")):
            at_05 = viii.loc[0.50]
            for column, short in (("Prediction", "p"), ("TP", "tp"), ("Find", "f"), ("F1-score", "s")):
                same(("mesnet", "IV", family, stage, "", "= Table VIII, T_nms 0.50"), iv.loc[stage, column],
                     at_05[f"{letter}-{short}"])
                same(("mesnet", "X", family, ("General", f"mesnet_{stage.lower()}"), "", "= Table IV"),
                     x.loc[("General", f"mesnet_{stage.lower()}"), column.removesuffix("-score")],
                     iv.loc[stage, column])
                if column != "TP":
                    same(("mesnet", "VI", family, "not share", stage, "= Table VIII, T_nms 0.50"),
                         vi.loc["not share", f"{stage} {column}"], at_05[f"{letter}-{short}"])
            for column, short in (("Find", "f"), ("F1-score", "s")):
                same(("mesnet", "V", family, "with", stage, "= Table VIII, T_nms 0.50"),
                     v.loc["with", f"{stage} {column}"], at_05[f"{letter}-{short}"])
            for short in ("tp", "f", "s"):
                same(("mesnet", "IX", family, 0.50, stage, "= Table VIII, T_nms 0.50"),
                     ix.loc[0.50, f"{letter}-{short}"], at_05[f"{letter}-{short}"])
            # Table IX's F1 from its TP and Find, with the predictions and MEs of the same operating point
            n, m = at_05[f"{letter}-p"], table("mesnet", "IV", family).loc[stage, "MEs"]
            for t, row in ix.iterrows():
                tp, found = row[f"{letter}-tp"], row[f"{letter}-f"]
                counted = 0.0 if tp * found == 0 else 2 * found * tp / (found * n + tp * m)
                if abs(counted - row[f"{letter}-s"]) > 0.0005 + 1e-9:
                    differ.add(("mesnet", "IX", family, t, stage, "= F1 of Table VIII's predictions at T_nms 0.50"))
            # the High F1-score operating point is Table VII's row at its T_CPN (T_CRN 0.40)
            high = vii.loc[settings.loc["High F1-score", "t_cpn"]]
            assert settings.loc["High F1-score", "t_crn"] == 0.40
            for column, short in (("Prediction", "p"), ("Find", "f"), ("F1", "s")):
                same(("mesnet", "X", family, ("High F1-score", f"mesnet_{stage.lower()}"), "", "= Table VII"),
                     x.loc[("High F1-score", f"mesnet_{stage.lower()}"), column], high[f"{letter}-{short}"])
        same(("bifpn_i3d", "III", family, "MESNet [24]", "", "= MESNet Table X, High F1-score CRN"),
             table("bifpn_i3d", "III", family).loc["MESNet [24]", "All"], x.loc[("High F1-score", "mesnet_crn"), "F1"])
        # He et al.: Tables I and III at T_eval 0.5 and Table II at top_threshold 0.5 (our configuration's reading)
        proposed = table("bifpn_i3d", "III", family).loc["Proposed"]
        for kind in ("MaE", "ME", "All"):
            same(("bifpn_i3d", "II", family, 0.50, kind, "= Table III, Proposed"),
                 table("bifpn_i3d", "II", family).loc[0.50, kind], proposed[kind])
            if family == "casme_sq":
                same(("bifpn_i3d", "I", family, 0.50, kind, "= Table III, Proposed"),
                     table("bifpn_i3d", "I", family).loc[0.50, f"{kind} F1"], proposed[kind])
        # Fu et al.: Table 1's own row is Table 2's F1; overall sums the types' counts (Eqs. 13-14)
        own = table("stsnet_sw", "1", family).loc["STSNet_SW (paper)"]
        for kind, column in (("macro", "MaE"), ("micro", "ME"), ("overall", "Overall")):
            same(("stsnet_sw", "1", family, "STSNet_SW (paper)", column, "= Table 2"), own[column],
                 table("stsnet_sw", "2", family).loc[kind, "F1-score"])
        for number in ("2", "3", "4"):
            counts = table("stsnet_sw", number, family)[["Total", "TP", "FP", "FN"]]
            for column in counts:
                same(("stsnet_sw", number, family, "overall", column, "= macro + micro"), counts.loc["overall", column],
                     counts.loc["macro", column] + counts.loc["micro", column])
        # Yap et al.: Table 7's original is Table 5's Ours*
        for column in ("MaE", "ME", "Overall"):
            same(("yap3dcnn", "7", family, "original", column, "= Table 5"),
                 table("yap3dcnn", "7", family).loc["original", column],
                 table("yap3dcnn", "5", family).loc["Ours*", column])
    # Zhou et al.: Tables 1, 2 and 6 share their CDE rows; Table 9's composite sums the databases
    t1, t2, t6, t9 = (table("fr", number, "cde") for number in ("1", "2", "6", "9"))
    for metric in ("uf1", "uar"):
        same(("fr", "1", "cde", "fr", metric, "= Table 2"), t1.loc["fr", metric], t2.loc["FR", ("composite", metric)])
        same(("fr", "1", "cde", "fr", metric, "= Table 6"), t1.loc["fr", metric], t6.loc["FR", metric])
        same(("fr", "1", "cde", "fr_dual_inception", metric, "= Table 2"), t1.loc["fr_dual_inception", metric],
             t2.loc["Dual-Inception", ("composite", metric)])
        same(("fr", "1", "cde", "fr_basic_inception", metric, "= Table 6"), t1.loc["fr_basic_inception", metric],
             t6.loc["Basic Inception", metric])
    for column in t9:
        same(("fr", "9", "cde", "composite", column, "= sum of the databases"), t9.loc["composite", column],
             t9.drop(index="composite")[column].sum())
    return differ


def test_numbers_printed_twice_agree():
    differ = copies_that_differ()
    expected = {key for key in INCONSISTENT if key[-1].startswith("= ")}
    assert differ - expected == set(), "copies inside a paper that disagree (new?)"
    assert expected - differ == set(), "listed as differing but equal: remove from INCONSISTENT"


def test_every_inconsistency_is_explained_and_checked():
    for key, why in INCONSISTENT.items():
        assert len(key) == 6 and (key[0], key[1]) in TABLES and why, key
        assert key[-1] in SCORE_CHECKS or key[-1].startswith("= "), key


def test_fr_figure_3_and_table_9_give_table_6():
    """Fig. 3's percentages of Table 9's composite counts are whole clips, and give Table 6's UF1 and UAR."""
    composite = table("fr", "9", "cde").loc["composite", ["negative", "positive", "surprise"]].to_numpy(float)
    figure, table6 = table("fr", "Fig. 3", "cde"), table("fr", "6", "cde")
    for model in ("Basic Inception", "FR"):
        percent = figure.loc[model].to_numpy()
        assert np.allclose(percent.sum(axis=1), 100, atol=0.011)
        clips = np.round(percent / 100 * composite[:, None])
        assert np.allclose(100 * clips / composite[:, None], percent, atol=0.005 + 1e-9)
        tp = np.diag(clips)
        uf1 = np.mean(2 * tp / (clips.sum(axis=0) + clips.sum(axis=1)))
        uar = np.mean(tp / clips.sum(axis=1))
        assert abs(uf1 - table6.loc[model, "uf1"]) <= 5e-5 and abs(uar - table6.loc[model, "uar"]) <= 5e-5, model


def test_table_rows_match_the_code_that_reads_them():
    from mecore.data.splits import CDMER_EXPERIMENTS
    from mecore.models import available_models
    from mecore.models.bifpn_i3d import T_EVALS, TOP_THRESHOLDS

    for family in ("casme_sq", "samm_lv"):
        assert list(table("bifpn_i3d", "II", family).index) == list(TOP_THRESHOLDS)
        methods = set(table("mesnet", "X", family).index.get_level_values("method"))
        assert methods == {"mesnet_cpn", "mesnet_crn", "mdmd", "lbp_chi2", "ltp_ml"}  # LTP-ML: not in mecore
        assert methods - {"ltp_ml"} <= set(available_models())
        assert set(table("mesnet", "X", family).index.get_level_values("selection")) == set(
            table("mesnet", "X settings", family).index)
    assert list(table("bifpn_i3d", "I", "casme_sq").index) == list(T_EVALS)
    for number, kind in (("3", "Type-I"), ("4", "Type-II")):
        experiments = CDMER_EXPERIMENTS[CDMER_EXPERIMENTS["type"] == kind]
        assert list(table("fr", number).index) == experiments["experiment"].tolist()
        assert set(reference("fr", number).datasets) == set(experiments["source"]) | set(experiments["target"])
    assert set(table("fr", "1", "cde").index) <= set(available_models())


def test_yap_table2_durations_are_ordered_and_give_table3_skips():
    """Table 2: min <= mean <= max per type; its means give Table 3's k-th frame skips (Ours*) by the k-th frame
    rule at the frame rate Table 3 counts in."""
    from mecore.models import get_model
    from mecore.models.yap3dcnn import kth_frame_from_duration

    spec = get_model("yap3dcnn")
    for family in reference("yap3dcnn", "2").values:
        durations = table("yap3dcnn", "2", family)
        assert list(durations.columns) == ["micro", "macro"]
        assert (durations.loc["min (s)"] <= durations.loc["mean (s)"]).all()
        assert (durations.loc["mean (s)"] <= durations.loc["max (s)"]).all()
        config = spec.config("paper", family)
        skips = [kth_frame_from_duration(durations.loc["mean (s)", t], config.input.skip_fps) for t in durations]
        assert skips == list(config.test.table3_kth), family


def test_mesnet_receptive_fields_follow_from_table_ii():
    """Sec. III-B's receptive fields on F: 1 + sum (k - 1) r (Eq. 9) over the backbone's two temporal
    convolutions and each sub-network's Table II layers; mecore.models.mesnet reads them from mecore.references."""
    from mecore.models import mesnet

    fields = table("mesnet", "Sec. III-B")["receptive field"].tolist()
    assert fields == [mesnet.receptive_field([(3, 1), (3, 1)] + list(layers)) for layers in mesnet.CPN_SUBNETWORKS]
    assert mesnet.PAPER_RECEPTIVE_FIELDS is references.MESNET_RECEPTIVE_FIELDS


def test_modules_read_the_moved_tables():
    """The constants that once typed these numbers now read them from mecore.references."""
    from mecore.data.summary import YAP_TABLE2
    from mecore.models import fr

    for label, family in (("SAMM-LV", "samm_lv"), ("CAS(ME)^2", "casme_sq")):
        pd.testing.assert_frame_equal(YAP_TABLE2[label], table("yap3dcnn", "2", family))
    assert fr.TABLE7_PARAMETERS is references.FR_TABLE_7_PARAMETERS
    parameters = table("fr", "7 parameters")
    assert list(parameters.index) == ["basic", "fr"] and list(parameters.columns) == [3, 4]
    # 3 and 4 classes: the 4-class model has more parameters, each variant
    assert (parameters[4] > parameters[3]).all()


def test_a_wrong_paper_table_or_family_is_a_clear_key_error():
    with pytest.raises(KeyError, match="no paper 'he2023': choose one of mesnet, yap3dcnn, bifpn_i3d"):
        table("he2023", "II", "casme_sq")
    with pytest.raises(KeyError, match=r"He et al. 2023 has no table 'IV' here: choose one of I, II, III"):
        table("bifpn_i3d", "IV", "casme_sq")
    with pytest.raises(KeyError, match=r"Table II is printed per dataset family: choose one of casme_sq, samm_lv, "
                                       r"not 'synth_casme_sq'"):
        table("bifpn_i3d", "II", "synth_casme_sq")
    with pytest.raises(KeyError, match=r"Table I is printed per dataset family: choose one of casme_sq, not 'samm_lv'"):
        table("bifpn_i3d", "I", "samm_lv")
    with pytest.raises(KeyError, match="not None"):
        table("mesnet", "IV")
    with pytest.raises(KeyError, match=r"Table 3 spans smic_hs, smic_vis, smic_nir at once and takes no family"):
        table("fr", "3", "smic_hs")
    with pytest.raises(KeyError, match="choose one of III, IV"):
        reference("mesnet", "XI")
    assert list(references.catalogue().columns) == ["paper", "table", "source", "datasets", "caption"]
    assert len(references.catalogue()) == len(TABLES)
