"""``mecore.recognise``: labels of the long-video sets, the apex rules, and spot-then-recognise end to end on the
smoke CAS(ME)^2 twin."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from mecore import metrics, paths
from mecore.data import DatasetError, load_dataset
from mecore.loso import run_loso
from mecore.recognise import (RecogniseError, apex_for, emotion_from_action_units, ground_truth_emotions,
                              outcome_counts, spot_then_recognise)


@pytest.mark.parametrize("units, label", [
    ("6+12", "positive"), ("12", "positive"), ("AU6+AU12B", "positive"), ("6+12+25", "positive"),
    ("1+2", "surprise"), ("1+2+5", "surprise"), ("26", "surprise"), ("1+2+26", "surprise"),
    ("1+2+4", "negative"), ("4+7+23", "negative"), ("9+10", "negative"), ("R12", "negative"), ("L14", "negative"),
    ("15+17", "negative"), ("L2", "others"), ("25", "others"), ("", "others"),
])
def test_action_units_give_the_class_of_their_prototype(units, label):
    assert emotion_from_action_units(units) == label


@pytest.fixture(scope="module")
def casme(smoke_root):
    return load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")


def test_ground_truth_labels_come_from_the_workbook_or_the_action_units(casme, smoke_root):
    truth = ground_truth_emotions(casme)
    assert (truth["emotion_source"] == "annotated").all()
    assert truth["emotion"].isin(metrics.STR_LABELS).all() and truth["emotion"].isin(metrics.STR_CLASSES).any()
    samm = ground_truth_emotions(load_dataset("synth_samm_lv", root=smoke_root / "samm_lv"))
    assert (samm["emotion_source"] == "action units").all()  # the SAMM-LV sheet has no emotion column
    assert list(samm["emotion"]) == [emotion_from_action_units(u) for u in samm["action_units"]]
    blank = casme.annotations.assign(emotion=pd.NA, action_units="")
    with pytest.raises(DatasetError, match="neither an emotion nor action units"):
        ground_truth_emotions(dataclasses.replace(casme, annotations=blank))


def test_apex_rules(casme):
    truth = ground_truth_emotions(casme)
    first = truth.iloc[0]
    intervals = pd.DataFrame({"video": [first["video"]] * 2, "onset": [first["onset"], 5000],
                              "offset": [first["offset"], 5010], "apex": [np.nan, 5003]})
    mid = apex_for(casme, intervals, "mid")
    assert list(mid) == [(first["onset"] + first["offset"]) // 2, 5005]
    assert list(apex_for(casme, intervals, "predicted")) == [mid[0], 5003]
    # the hit interval takes its ground truth's apex; the interval that hits nothing keeps its middle frame
    assert list(apex_for(casme, intervals, "true", truth)) == [first["apex"], 5005]
    with pytest.raises(RecogniseError, match="unknown apex rule 'peak'"):
        apex_for(casme, intervals, "peak")


def test_spot_then_recognise_classifies_every_interval_and_scores_it(casme, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")  # recognisers trained here stay here
    torch.set_num_threads(1)
    spotted = run_loso("mdmd", casme, "smoke", scheduler="sync", progress=False).predictions
    with pytest.raises(RecogniseError, match="video.*'nope'"):
        spot_then_recognise(spotted.assign(video="nope"), casme, "fr", profile="smoke", progress=False)
    run = spot_then_recognise(spotted, casme, "fr", spotter="mdmd", profile="smoke", progress=False)
    assert len(run.predictions) == len(spotted)
    assert run.predictions["emotion"].isin(metrics.STR_CLASSES).all()
    probabilities = run.predictions[[f"p_{c}" for c in metrics.STR_CLASSES]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(run.predictions["emotion_p"], probabilities.max(axis=1))
    assert np.isclose(run.score.strs, run.score.spot_f1 * run.score.analysis_f1)
    counts = outcome_counts(run.score)
    assert sum(counts.values()) == len(casme.annotations)
    assert (tmp_path / "runs" / "str" / "mdmd" / casme.name / "smoke-fr-mid.csv").exists()
    recognisers = sorted((tmp_path / "runs" / "str" / "recognisers" / "fr" / casme.name).glob("smoke-*/*"))
    assert recognisers and all((folder / "checkpoint.pt").exists() for folder in recognisers)
    again = spot_then_recognise(spotted, casme, "fr", spotter="mdmd", profile="smoke", progress=False)
    pd.testing.assert_frame_equal(again.predictions, run.predictions)  # the folds' recognisers reloaded
