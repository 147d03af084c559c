"""Protocol splits: LOSO, MESNet's constrained train/validation split, regroupings, CDMER."""
import math

import numpy as np
import pandas as pd
import pytest

from mecore.data import DatasetError, annotation_frame
from mecore.data.splits import CDMER_EXPERIMENTS, REGROUPINGS, kfold_splits, loso_splits, mesnet_train_val_split, regroup


def long_video_table(n_subjects=10, videos_per_subject=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for v in range(videos_per_subject):
            for k in range(int(rng.integers(0, 4))):
                rows.append(dict(subject=f"s{s}", video=f"s{s}_v{v}", onset=10 * k, apex=10 * k + 2, offset=10 * k + 5,
                                 type="micro", fps=30.0))
            rows.append(dict(subject=f"s{s}", video=f"s{s}_v{v}", onset=100, apex=120, offset=140, type="macro", fps=30.0))
    return annotation_frame(rows)


def test_loso_partitions_rows_by_subject():
    table = long_video_table()
    folds = loso_splits(table)
    assert [f.name for f in folds] == sorted(table["subject"].unique())
    for fold in folds:
        assert set(table.loc[fold.test, "subject"]) == {fold.name}
        assert fold.name not in set(table.loc[fold.train, "subject"])
        assert len(fold.train) + len(fold.test) == len(table)


def test_mesnet_split_meets_its_rule_and_is_seeded():
    table = long_video_table(n_subjects=22, seed=1)
    total = int((table["type"] == "micro").sum())
    train, val = mesnet_train_val_split(table, "s0", seed=3)
    assert not set(train) & set(val)
    assert all(not v.startswith("s0_") for v in train + val)
    me = table[table["type"] == "micro"].groupby("video").size()
    assert me.reindex(train, fill_value=0).sum() >= math.ceil(0.64 * total)
    assert me.reindex(val, fill_value=0).sum() >= math.ceil(0.15 * total)
    assert round(len(train) / (len(train) + len(val)), 1) == 0.7
    assert (train, val) == mesnet_train_val_split(table, "s0", seed=3)
    assert (train, val) != mesnet_train_val_split(table, "s0", seed=4)


def test_mesnet_split_reports_impossible_rule():
    table = long_video_table(n_subjects=3, seed=2)
    with pytest.raises(DatasetError, match="try reference='fold'"):
        mesnet_train_val_split(table, "s1", max_tries=200)
    train, val = mesnet_train_val_split(table, "s1", reference="fold", min_train=0.5, min_val=0.1)
    assert train and val


def test_regroupings_follow_fr_tables():
    emotions = ["happiness", "surprise", "disgust", "repression", "fear", "sadness", "others", "anger", "contempt"]
    table = annotation_frame([dict(subject="1", video=str(i), onset=0, offset=1, type="micro", emotion=e)
                              for i, e in enumerate(emotions)])
    assert regroup(table, "cde3")["emotion"].tolist() == ["positive", "surprise", "negative", "negative", "negative",
                                                          "negative", "negative", "negative"]  # others dropped
    assert regroup(table, "cdmer3")["original_emotion"].tolist() == ["happiness", "surprise", "disgust", "fear", "sadness"]
    four = regroup(table, "four_class")
    assert dict(zip(four["original_emotion"], four["emotion"]))["repression"] == "others"
    assert regroup(table, "casme2_5class")["emotion"].tolist() == ["happiness", "surprise", "disgust", "repression", "others"]
    with pytest.raises(ValueError, match="unknown regrouping"):
        regroup(table, "seven")
    assert set(REGROUPINGS) == {"cde3", "cdmer3", "four_class", "casme2_5class"}


def test_cdmer_table_and_stratified_folds():
    assert len(CDMER_EXPERIMENTS) == 12 and (CDMER_EXPERIMENTS["type"] == "Type-I").sum() == 6
    assert set(CDMER_EXPERIMENTS["source"]) == set(CDMER_EXPERIMENTS["target"]) == {"smic_hs", "smic_vis", "smic_nir", "casme2"}
    table = pd.DataFrame({"emotion": ["negative"] * 10 + ["positive"] * 10 + ["surprise"] * 5})
    folds = kfold_splits(table, n_folds=5, seed=0)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(25))
    assert all(table.loc[f.test, "emotion"].value_counts()["surprise"] == 1 for f in folds)
