"""mecore.sweeps: the tables and figures of the threshold sweeps (notebook 20) and the comparison (notebook 30),
on small hand-made intervals."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mecore import sweeps  # noqa: E402
from mecore.baselines import VideoCurves  # noqa: E402
from mecore.metrics import spotting_counts  # noqa: E402

# v1: one micro-expression [10, 20]; v2: one macro-expression [100, 140]
GT = pd.DataFrame({"video": ["v1", "v2"], "onset": [10, 100], "offset": [20, 140], "type": ["micro", "macro"]})


def spotted(rows):
    """Spotted intervals from (video, onset, offset, type, score) tuples."""
    return pd.DataFrame(rows, columns=["video", "onset", "offset", "type", "score"])


# a hit of the micro-expression (0.9), a near miss of it (IoU 6/16, 0.6), a false positive (0.3), a macro hit (0.8)
SPOTTED = spotted([("v1", 10, 20, "micro", 0.9), ("v1", 15, 25, "micro", 0.6), ("v1", 60, 70, "micro", 0.3),
                   ("v2", 100, 140, "macro", 0.8)])


def test_counts_row_reads_the_convention_and_type():
    micro = sweeps.counts_row(GT, SPOTTED, "megc2020", "micro", t_eval=0.5)
    assert micro["Prediction"] == 3 and micro["TP"] == 1 and micro["Find"] == 1
    assert micro["Recall"] == 1.0 and micro["Precision"] == pytest.approx(1 / 3)
    assert micro["F1"] == pytest.approx(0.5)
    overall = sweeps.counts_row(GT, SPOTTED, "megc2020", t_eval=0.5)
    assert (overall["Prediction"], overall["TP"], overall["Find"]) == (4, 2, 2)
    assert list(overall) == ["Prediction", "TP", "Find", "Recall", "Precision", "F1"]
    loose = sweeps.counts_row(GT, SPOTTED, "mesnet", "micro", t_eval=0.3)  # the near miss hits at IoU 0.375
    assert (loose["TP"], loose["Find"]) == (2, 1)


def test_non_increasing():
    assert sweeps.non_increasing([3, 3, 2, 0]) and sweeps.non_increasing([1])
    assert not sweeps.non_increasing([3, 2, 2.5])


def test_paper_dataset_names_the_family_and_refuses_others():
    assert sweeps.paper_dataset("synth_casme_sq") == "CAS(ME)^2"
    assert sweeps.paper_dataset("samm_lv") == "SAMM-LV"
    with pytest.raises(ValueError, match="synth_casme2"):
        sweeps.paper_dataset("synth_casme2")


def test_mesnet_sweep_counts_each_setting():
    swept = {("t_crn", t): {"crn": SPOTTED[SPOTTED["score"] >= t]} for t in (0.0, 0.5, 0.95)}
    table = sweeps.mesnet_sweep(GT, swept, "t_crn", [0.0, 0.5, 0.95], "crn", t_eval=0.5)
    assert list(table.columns) == ["t_crn", "Prediction", "TP", "Find", "Recall", "Precision", "F1"]
    assert table["Prediction"].tolist() == [3, 2, 0]  # micro-expressions only
    assert table["Find"].tolist() == [1, 1, 0]
    assert sweeps.non_increasing(table["Prediction"])


def test_t_eval_sweep_keeps_the_intervals_and_loses_hits():
    table = sweeps.t_eval_sweep(GT, SPOTTED, [0.05, 0.3, 0.5, 0.95])
    assert table["t_eval"].tolist() == [0.05, 0.3, 0.5, 0.95]
    assert table["Prediction"].nunique() == 1
    assert table["TP"].tolist() == [2, 2, 1, 1] and sweeps.non_increasing(table["Find"])


def test_with_paper_merges_the_papers_columns_by_the_knob():
    ours = pd.DataFrame({"t_crn": [0.4, 0.5, 0.6], "Prediction": [9, 5, 2], "F1": [0.1, 0.2, 0.3]})
    paper = pd.DataFrame({"T": [0.4, 0.6, 0.8], "R-p": [100, 50, 10], "R-s": [0.05, np.nan, 0.01], "C-p": 1})
    merged = sweeps.with_paper(ours, "t_crn", paper, {"R-p": "Prediction", "R-s": "F1"})
    assert list(merged.columns) == ["t_crn", "Prediction", "F1", "paper Prediction", "paper F1"]
    assert merged["t_crn"].tolist() == [0.4, 0.5, 0.6]  # our rows, in our order
    assert merged["paper Prediction"].tolist()[0] == 100 and np.isnan(merged["paper Prediction"].iloc[1])
    lines = sweeps.paper_lines(paper, "t_crn", {"R-p": "Prediction", "R-s": "F1"})
    assert list(lines.columns) == ["t_crn", "Prediction", "F1"] and lines["t_crn"].tolist() == [0.4, 0.8]


def test_mesnet_paper_table_has_its_row_label_as_a_column():
    table = sweeps.mesnet_paper_table("VII", "casme_sq")
    assert table.columns[0] == "T" and {"C-p", "R-p", "R-s"} <= set(table.columns)


def test_top_threshold_table_filters_by_score():
    table = sweeps.top_threshold_table(GT, SPOTTED, [0.3, 0.7, 0.85], t_eval=0.5)
    assert table["Prediction"].tolist() == [4, 2, 1]
    assert {"MaE F1", "ME F1"} <= set(table.columns)
    assert table["MaE F1"].tolist() == [1.0, 1.0, 0.0]  # the macro hit scores 0.8


def test_stsnet_postprocess_table_puts_the_paper_beside():
    variants = {"none": SPOTTED, "merge": SPOTTED.iloc[[0, 3]]}
    table = sweeps.stsnet_postprocess_table(GT, variants, "casme_sq", t_eval=0.5)
    assert table["postprocess"].tolist() == ["none", "merge"] and table["Prediction"].tolist() == [4, 2]
    for name, row in table.set_index("postprocess").iterrows():
        assert [row["paper Precision"], row["paper Recall"], row["paper F1"]] == \
            sweeps.stsnet_paper_overall(name, "casme_sq")


def test_p_sweep_spots_fewer_runs_at_a_higher_p():
    curve = np.zeros(60)
    curve[10:14], curve[30:35] = 1.0, 0.5
    curves = [VideoCurves("v1", np.arange(60), {"micro": curve}, {"micro": 3})]
    table = sweeps.p_sweep(GT, curves, [0.1, 0.8], "runs", t_eval=0.5)
    assert table["p"].tolist() == [0.1, 0.8] and table["Prediction"].tolist() == [2, 1]


def test_main_table_rows_and_columns():
    counts = spotting_counts(GT, SPOTTED, "megc2020", 0.5)
    row = sweeps.main_row(counts)
    assert len(row) == 18 and row["micro", "TP"] == 1 and row["overall", "FP"] == 2
    table = sweeps.main_table({"a": counts, "b": spotting_counts(GT, SPOTTED.iloc[:0], "megc2020", 0.5)})
    assert list(table.index) == ["a", "b"] and table.index.name == "method"
    assert table.columns.nlevels == 2 and list(table.columns.get_level_values(0).unique()) == sweeps.TYPES
    assert table.loc["b", ("overall", "FN")] == 2 and table.loc["a", ("macro", "F1")] == 1.0


def test_precision_recall_point_and_per_subject_f1():
    counts = spotting_counts(GT, SPOTTED, "megc2020", 0.5)
    point = sweeps.precision_recall_point("d", "m", "LOSO", counts)
    assert point["micro precision"] == pytest.approx(1 / 3) and point["overall recall"] == 1.0
    assert len(point) == 3 + 6
    folds = {"a": pd.DataFrame({"subject": ["s1", "s2"], "f1": [0.5, np.nan]}),
             "b": pd.DataFrame({"subject": ["s1", "s2"], "f1": [0.1, 0.2]})}
    grid = sweeps.per_subject_f1(folds)
    assert list(grid.index) == ["a", "b"] and list(grid.columns) == ["s1", "s2"] and grid.loc["b", "s2"] == 0.2


@pytest.mark.parametrize("f1", [0.05, 0.2, 0.8])
def test_f1_isocurve_points_have_that_f1(f1):
    recall, precision = sweeps.f1_isocurve(f1, np.linspace(0.005, 1, 200))
    assert len(recall) and ((precision > 0) & (precision <= 1)).all()
    assert np.allclose(2 * precision * recall / (precision + recall), f1)
    assert recall.min() >= f1 / (2 - f1) - 1e-12  # precision 1 at the lowest recall; recall 1 at precision f1/(2-f1)


def test_table_x_settings_and_rows():
    settings = sweeps.table_x_settings("casme_sq")
    assert set(settings) == {"General", "High F1-score"}
    assert settings["General"]["mesnet"] == {"t_cpn": 0.5, "t_crn": 0.5} and 0 < settings["General"]["mdmd"] < 1
    row = sweeps.table_x_row(GT, SPOTTED, "synth_casme_sq", "General", "mesnet_crn", settings["General"]["mesnet"])
    assert row["setting"] == "t_cpn 0.5, t_crn 0.5" and row["MEs"] == 1 and row["Prediction"] == 3
    assert row["TP / Find"] == "1 / 1" and row["paper F1"] is not None and " / " in row["paper TP / Find"]
    missing = sweeps.table_x_row(GT, SPOTTED, "synth_casme_sq", "General", "yap3dcnn", {"p": 0.1})
    assert missing["setting"] == "p 0.1" and missing["paper F1"] is None and missing["paper Prediction"] is None


def test_paper_f1_names_its_source_and_each_type():
    for model, postprocess in (("yap3dcnn", None), ("bifpn_i3d", None), ("stsnet_sw", "none")):
        source, values = sweeps.paper_f1(model, "casme_sq", postprocess)
        assert source and set(values) == {"macro", "micro", "overall"}, model


def test_figures_are_saved_where_asked(tmp_path):
    table = pd.DataFrame({"t": [0.1, 0.5], "Precision": [0.2, 0.4], "Recall": [0.9, 0.5], "F1": [0.3, 0.45],
                          "Prediction": [10, 4]})
    path = sweeps.plot_sweep({"ours": table}, "t", "title", tmp_path / "sweep.png",
                             paper={"ours": table[["t", "F1"]]}, marks={"profile": 0.5}, paper_name="CAS(ME)^2")
    assert path == tmp_path / "sweep.png" and path.stat().st_size > 0
    figure = sweeps.draw_timeline(GT, SPOTTED, "v1", np.arange(100), 0.5, t_eval=0.5)
    assert "2 spotted, 1 hit, 1 of 1 MEs found" in figure.axes[0].get_title()  # scores 0.9 and 0.6
    matplotlib.pyplot.close(figure)
