"""MEGC result files: per-video spotting files and the challenge submission CSVs, round trips and errors."""
import os

import numpy as np
import pandas as pd
import pytest

from mecore.megc import (MEGCFormatError, read_spotting_files, read_submission_csv, write_spotting_files,
                         write_submission_csv)

SPOTTED = pd.DataFrame({"video": ["s15_0101", "s15_0101", "006_1"], "onset": [33, 82, 161],
                        "offset": [40, 85, 216], "score": [0.25, 1 / 3, 1.0]})


def test_per_video_files_round_trip_and_every_video_gets_a_file(tmp_path):
    written = write_spotting_files(SPOTTED, tmp_path, videos=["s15_0101", "006_1", "s16_0101"])
    assert [p.name for p in written] == ["s15_0101.txt", "006_1.txt", "s16_0101.txt"]
    assert (tmp_path / "s15_0101.txt").read_text() == "33 40 0.25\n82 85 0.3333333333333333\n"
    assert (tmp_path / "s16_0101.txt").read_text() == ""  # nothing spotted there
    back = read_spotting_files(tmp_path, videos=["s15_0101", "006_1", "s16_0101"], type="micro")
    expected = SPOTTED.sort_values("video", kind="stable").reset_index(drop=True)  # files are read by name
    pd.testing.assert_frame_equal(back.drop(columns="type"), expected, check_dtype=False)
    assert back["score"].tolist() == expected["score"].tolist()  # exact, not approximately
    assert set(back["type"]) == {"micro"}


def test_per_video_files_default_score_is_the_baselines(tmp_path):
    write_spotting_files(SPOTTED.drop(columns="score").assign(type="macro"), tmp_path)
    assert (tmp_path / "006_1.txt").read_text() == "161 216 1.0\n"


def test_spotting_csv_round_trip_in_the_megc2022_layout(tmp_path):
    intervals = SPOTTED.assign(type=["micro", "macro", "micro"])
    path = write_submission_csv(intervals, tmp_path / "cas_pred.csv", task="spotting", include_score=True)
    assert path.read_text().splitlines()[:2] == ["vid,pred_onset,pred_offset,type,score", "s15_0101,33,40,me,0.25"]
    back = read_submission_csv(path, task="spotting", videos=["s15_0101", "006_1"])
    pd.testing.assert_frame_equal(back, intervals[["video", "onset", "offset", "score", "type"]], check_dtype=False)
    plain = read_submission_csv(write_submission_csv(intervals, tmp_path / "p.csv"), task="spotting")
    assert plain["score"].isna().all() and plain["type"].tolist() == ["micro", "macro", "micro"]
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "vid,pred_onset,pred_offset,type"


def test_spotting_csv_reads_the_megc2023_header_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "samm_pred.csv"
    path.write_text("\ufeffvid,onset,offset,type\n004_3,2086,2163,me\n\n004_3,2177,2331,mae\n", encoding="utf-8")
    back = read_submission_csv(path, task="spotting")
    assert back[["video", "onset", "offset", "type"]].values.tolist() == [["004_3", 2086, 2163, "micro"],
                                                                          ["004_3", 2177, 2331, "macro"]]


def test_str_csv_round_trip(tmp_path):
    intervals = pd.DataFrame({"subject": ["5", "8", "8"], "video": ["anger1", "disgust1", "disgust1"],
                              "onset": [482, 18, 1354], "offset": [504, 45, 1382],
                              "emotion": ["negative", "surprise", "others"]})
    path = write_submission_csv(intervals, tmp_path / "cas_pred.csv", task="str")
    assert path.read_text().splitlines()[:2] == ["subject,video,onset,offset,emotion", "5,anger1,482,504,negative"]
    back = read_submission_csv(path, task="str")
    pd.testing.assert_frame_equal(back.drop(columns="score"), intervals, check_dtype=False)


# ------------------------------------------------------------------------------------ errors
def test_video_names_that_do_not_match_are_errors(tmp_path):
    write_spotting_files(SPOTTED, tmp_path)
    with pytest.raises(MEGCFormatError, match=r"006_1\.txt: video '006_1' is not one of the videos given"):
        read_spotting_files(tmp_path, videos=["s15_0101"])
    with pytest.raises(MEGCFormatError, match=r"no file for video\(s\) 's99_0101'"):
        read_spotting_files(tmp_path, videos=["s15_0101", "006_1", "s99_0101"])
    with pytest.raises(MEGCFormatError, match="row 2, video '006_1': video '006_1' is not one of the videos given"):
        write_spotting_files(SPOTTED, tmp_path / "other", videos=["s15_0101"])
    path = write_submission_csv(SPOTTED.assign(type="micro"), tmp_path / "cas_pred.csv")
    with pytest.raises(MEGCFormatError, match=r"cas_pred\.csv, line 4: video '006_1' is not one of the videos given"):
        read_submission_csv(path, videos=["s15_0101"])


def test_unknown_labels_are_errors(tmp_path):
    path = tmp_path / "cas_pred.csv"
    path.write_text("vid,pred_onset,pred_offset,type\ns15_0101,1,9,micro-expression\n")
    with pytest.raises(MEGCFormatError, match=r"cas_pred\.csv, line 2: type 'micro-expression' is not 'me'"):
        read_submission_csv(path)
    path.write_text("subject,video,onset,offset,emotion\n5,anger1,1,9,happiness\n")
    with pytest.raises(MEGCFormatError, match=r"line 2: emotion 'happiness' is not an STR label"):
        read_submission_csv(path, task="str")
    bad = pd.DataFrame({"subject": ["5"], "video": ["anger1"], "onset": [1], "offset": [9], "emotion": ["happy"]})
    with pytest.raises(MEGCFormatError, match="row 0, video 'anger1': emotion 'happy' is not an STR label"):
        write_submission_csv(bad, tmp_path / "x.csv", task="str")
    with pytest.raises(MEGCFormatError, match="type 'tiny' is not micro, macro"):
        write_submission_csv(SPOTTED.assign(type="tiny"), tmp_path / "y.csv")


@pytest.mark.parametrize("text, message", [
    ("33 40 0.25\n82 85\n", r"s15_0101\.txt, line 2: '82 85' is not 'onset offset score'"),
    ("33 40 0.25\n\n", r"line 2: '' is not 'onset offset score'"),
    ("33.5 40 0.25\n", r"line 1: onset '33.5' is not a whole frame number"),
    ("33 forty 0.25\n", r"line 1: offset 'forty' is not a whole frame number"),
    ("33 40 nan\n", r"line 1: score 'nan' is not a finite number"),
    ("40 33 1.0\n", r"line 1: offset 33 is before onset 40"),
])
def test_malformed_lines_are_errors_naming_file_and_line(tmp_path, text, message):
    (tmp_path / "s15_0101.txt").write_text(text)
    with pytest.raises(MEGCFormatError, match=message):
        read_spotting_files(tmp_path)


def test_malformed_csv_rows_and_headers_are_errors(tmp_path):
    path = tmp_path / "cas_pred.csv"
    path.write_text("vid,pred_onset,pred_offset,type\ns15_0101,1,9\n")
    with pytest.raises(MEGCFormatError, match=r"line 2: 3 fields, expected 4"):
        read_submission_csv(path)
    path.write_text("video,start,end,type\n")
    with pytest.raises(MEGCFormatError, match=r"line 1: header 'video,start,end,type' is not"):
        read_submission_csv(path)
    path.write_text("vid,pred_onset,pred_offset,type\ns15_0101,9,1,me\n")
    with pytest.raises(MEGCFormatError, match=r"line 2: offset 1 is before onset 9"):
        read_submission_csv(path)
    with pytest.raises(MEGCFormatError, match="several types"):
        write_spotting_files(SPOTTED.assign(type=["micro", "macro", "micro"]), tmp_path / "mixed")
    with pytest.raises(MEGCFormatError, match="onset 1.5 is not a whole frame number"):
        write_submission_csv(SPOTTED.assign(type="micro", onset=[1.5, 82, 161]), tmp_path / "z.csv")


def test_a_failed_write_leaves_no_half_written_file(tmp_path, monkeypatch):
    target = tmp_path / "cas_pred.csv"
    target.write_text("old\n")

    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_submission_csv(SPOTTED.assign(type="micro"), target)
    with pytest.raises(OSError, match="disk full"):
        write_spotting_files(SPOTTED, tmp_path / "files")
    assert target.read_text() == "old\n"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["cas_pred.csv"]  # no temporary left


def test_a_bad_row_stops_before_any_file_is_written(tmp_path):
    bad = SPOTTED.assign(offset=[40, 85, 100])  # 006_1: offset 100 before onset 161
    with pytest.raises(MEGCFormatError, match="row 2, video '006_1': offset 100 is before onset 161"):
        write_spotting_files(bad, tmp_path)
    assert os.listdir(tmp_path) == []
