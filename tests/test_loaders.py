"""Loaders on small fixture copies of each real layout, quirks included, and their errors on bad input."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mecore.data import DatasetError, load_dataset
from mecore.data.synthetic import with_preamble
from mecore.data.summary import counts
from mecore.data.loaders import load_casme2, load_casme_sq, load_cde, load_samm, load_samm_lv, load_smic, load_smic_e


def frames(folder: Path, numbers, pattern: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        cv2.imwrite(str(folder / pattern.format(n)), np.full((8, 8, 3), n % 255, np.uint8))


# ---- CAS(ME)^2 ---------------------------------------------------------------------------------------

def casme_sq_copy(root: Path, workbook: str = "CAS(ME)^2code_final.xlsx", codes_as_numbers: bool = False,
                  rows=None) -> Path:
    rows = rows or [
        [1, "disgust1_1", 10, 14, 20, "4+L10", "negative", "micro-expression", "disgust"],
        [1, "disgust1_2", 30, 40, 0, "9", "negative", "macro-expression", "disgust"],  # offset 0
        [2, "happy1_1", 5, 0, 25, "12", "positive", "macro-expression", "happy"],  # apex 0
        [2, "anger1_1", 5, 8, 12, "4", "negative", "micro-expression", "anger"],  # folder absent
    ]
    with pd.ExcelWriter(root / workbook) as book:
        pd.DataFrame(rows).to_excel(book, sheet_name="CASFEcode_final", header=False, index=False)
        pd.DataFrame([[15, "s15", 1], [16, "s16", 2]]).to_excel(book, sheet_name="naming rule1", header=False, index=False)
        codes = [[101, "disgust1"], [502, "happy1"], [401, "anger1"]] if codes_as_numbers else \
            [["0101", "disgust1"], ["0502", "happy1"], ["0401", "anger1"]]
        pd.DataFrame(codes).to_excel(book, sheet_name="naming rule2", header=False, index=False)
    frames(root / "rawpic" / "s15" / "15_0101disgustingteeth", range(1, 61), "img{:03d}.jpg")
    frames(root / "rawpic" / "s16" / "16_0502funnydog", range(1, 31), "img{}.jpg")  # img1.jpg variant
    return root


@pytest.mark.parametrize("workbook", ["CAS(ME)^2code_final.xlsx", "code_final.xlsx", "CASME_sq_gt.xlsx"])
@pytest.mark.parametrize("codes_as_numbers", [False, True])
def test_casme_sq_layout_and_quirks(tmp_path, workbook, codes_as_numbers):
    data = load_casme_sq(casme_sq_copy(tmp_path, workbook, codes_as_numbers))
    table = data.annotations
    assert list(table["video"]) == ["15_0101", "15_0101", "16_0502"]
    assert list(table["subject"]) == ["s15", "s15", "s16"]
    assert table.loc[1, "offset"] == 40 and table.loc[1, "type"] == "macro"  # offset := apex
    assert pd.isna(table.loc[2, "apex"])
    assert table["fps"].eq(30).all()
    report = " ".join(data.repairs)
    assert "1 rows had offset 0" in report and "1 rows had apex 0" in report
    assert "anger1" not in table["expression"].tolist() and "skipped" in report and "absent" in report
    assert data.video("16_0502").frame(1).shape == (8, 8, 3)
    assert data.video("15_0101").frame_path(7).name == "img007.jpg"


def test_casme_sq_annotations_only_keeps_rows_without_frames(tmp_path):
    root = casme_sq_copy(tmp_path)
    data = load_casme_sq(root, annotations_only=True)
    assert len(data.annotations) == 4


def test_casme_sq_bad_inputs_name_file_and_row(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_casme_sq(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no CAS.*workbook found"):
        load_casme_sq(tmp_path)
    root = casme_sq_copy(tmp_path, rows=[[1, "disgust1_1", "ten", 14, 20, "4", "negative", "micro-expression", "x"]])
    with pytest.raises(DatasetError, match=r"code_final.xlsx, sheet CASFEcode_final, row 1: onset 'ten'"):
        load_casme_sq(root)
    pd.DataFrame([[1]]).to_excel(root / "CAS(ME)^2code_final.xlsx", sheet_name="Sheet1", header=False, index=False)
    with pytest.raises(DatasetError, match="no sheet 'CASFEcode_final'"):
        load_casme_sq(root)


def test_casme_sq_short_folder_is_reported(tmp_path):
    root = casme_sq_copy(tmp_path, rows=[[1, "disgust1_1", 10, 14, 90, "4", "negative", "micro-expression", "x"]])
    data = load_casme_sq(root)
    assert data.annotations.empty and "do not cover the annotated 10..90" in data.repairs[0]


def test_casme_sq_loads_video_folders_without_annotation(tmp_path):
    """MEGC spots all 98 real videos, 3 of which no row names: the loader loads them, of the folder's subject."""
    root = casme_sq_copy(tmp_path)
    frames(root / "rawpic" / "s15" / "15_0508funnyfall", range(1, 41), "img{:03d}.jpg")  # subject with rows
    frames(root / "rawpic" / "s17" / "17_0503funnycat", range(1, 21), "img{}.jpg")  # subject with no row
    (root / "rawpic" / "s15" / "15_0505noframes").mkdir()  # no frame image: not a video
    frames(root / "rawpic" / "s15" / "notes", range(1, 3), "img{}.jpg")  # frames, but not a video name
    data = load_casme_sq(root)
    assert sorted(data.videos) == ["15_0101", "15_0508", "16_0502", "17_0503"]
    extra = data.video("15_0508")
    assert (extra.subject, extra.folder.name, extra.first_frame, extra.last_frame, extra.fps) == \
        ("s15", "15_0508funnyfall", 1, 40, 30.0)
    assert data.video("17_0503").subject == "s17" and data.video("17_0503").n_frames == 20
    assert data.subjects == ["s15", "s16", "s17"]  # a subject with only unannotated videos is a LOSO fold
    assert data.intervals("15_0508").empty and len(data.annotations) == 3
    line = next(r for r in data.repairs if "carry no annotation" in r)
    assert line.startswith("2 video folders carry no annotation (s15/15_0508funnyfall as 15_0508, "
                           "s17/17_0503funnycat as 17_0503)") and "MEGC" in line
    assert any("not follow the dataset's naming" in r and "s15/notes" in r for r in data.repairs)
    table = counts(data.annotations, data.videos)
    assert table.loc["s17"].tolist() == [0, 0, 1] and table.loc["s15", "videos"] == 2
    listed = load_casme_sq(root, annotations_only=True)
    assert "15_0508" not in listed.videos and "17_0503" not in listed.videos and "s17" not in listed.subjects
    assert not any("no annotation" in r for r in listed.repairs)


def test_casme_sq_every_video_annotated_reports_nothing(tmp_path):
    data = load_casme_sq(casme_sq_copy(tmp_path))
    assert sorted(data.videos) == ["15_0101", "16_0502"]
    assert not any("no annotation" in r or "naming" in r for r in data.repairs)


# ---- SAMM Long Videos ----------------------------------------------------------------------------------

def samm_lv_copy(root: Path, workbook="SAMM_LongVideos_V1_Release.xlsx", offset=30.40000000000009) -> Path:
    header = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
              "Action Units", "Notes"]
    rows = [[6, "006_1_1", 1, 0, 10, offset, 30, "Macro", "12", ""],
            [6, "006_1_2", 1, 40, -1, 50, 10, "Micro - 1/2", "R14", ""]]
    table = with_preamble(["preamble"] * 9, header, rows)
    table.to_excel(root / workbook, sheet_name="FACS_Movement_Only", header=False, index=False)
    frames(root / "SAMM_longvideos" / "006_1", range(1, 61), "006_1_{:04d}.jpg")
    return root


@pytest.mark.parametrize("workbook", ["SAMM_LongVideos_V1_Release.xlsx", "SAMM_LongVideos_V3_Release.xlsx", "SAMMLV_gt.xlsx"])
def test_samm_lv_layout_and_quirks(tmp_path, workbook):
    data = load_samm_lv(samm_lv_copy(tmp_path, workbook))
    table = data.annotations
    assert list(table["video"]) == ["006_1", "006_1"] and list(table["subject"]) == ["006", "006"]
    assert list(table["type"]) == ["macro", "micro"]
    assert table.loc[0, "offset"] == 30 and table.loc[0, "onset"] == 1 and pd.isna(table.loc[1, "apex"])
    report = " ".join(data.repairs)
    assert "1 frame numbers were not integers" in report and "apex -1" in report and "moved to the first frame" in report
    assert data.video("006_1").grayscale


def test_samm_lv_offset_beyond_frames_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"row 11: frames 1..60 .* do not cover the annotated 1..99"):
        load_samm_lv(samm_lv_copy(tmp_path, offset=99))


def test_samm_lv_loads_video_folders_without_annotation(tmp_path):
    root = samm_lv_copy(tmp_path)
    frames(root / "SAMM_longvideos" / "006_2", range(1, 31), "006_2_{:04d}.jpg")
    frames(root / "SAMM_longvideos" / "011_1", range(1, 21), "011_1_{:04d}.jpg")  # a subject with no movement
    (root / "SAMM_longvideos" / "006_3").mkdir()  # no frame image: not a video
    frames(root / "SAMM_longvideos" / "preview", range(1, 3), "preview_{:04d}.jpg")  # not a video name
    data = load_samm_lv(root)
    assert sorted(data.videos) == ["006_1", "006_2", "011_1"]
    extra = data.video("011_1")
    assert (extra.subject, extra.first_frame, extra.last_frame, extra.fps, extra.grayscale) == ("011", 1, 20, 200.0, True)
    assert data.video("006_2").subject == "006" and data.video("006_2").frame(5).ndim == 2
    assert data.subjects == ["006", "011"] and len(data.annotations) == 2
    line = next(r for r in data.repairs if "carry no annotation" in r)
    assert line.startswith("2 video folders carry no annotation (006_2, 011_1)")
    assert any("does not follow the dataset's naming" in r and "preview" in r for r in data.repairs)
    listed = load_samm_lv(root, annotations_only=True)
    assert sorted(listed.videos) == ["006_1"] and listed.subjects == ["006"]
    assert not any("no annotation" in r for r in listed.repairs)


# ---- CASME II ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["20140508.xlsx", "20190701.xlsx", "20190701.csv"])
def test_casme2_both_versions(tmp_path, version):
    columns = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
    rows = [[1, "EP02_01f", 46, 59, 86, "4+L10", "disgust"], ["02", "EP03_02", 10, "/", 40, "12", "happiness"]]
    table = pd.DataFrame(rows, columns=columns)
    if version.startswith("2019"):
        table.insert(2, "Unnamed: 2", None)
        table.insert(6, "Unnamed: 6", None)
    path = tmp_path / f"CASME2-coding-{version}"
    table.to_csv(path, index=False) if path.suffix == ".csv" else table.to_excel(path, index=False)
    frames(tmp_path / "CASME2-RAW" / "sub01" / "EP02_01f", range(40, 90), "img{}.jpg")
    frames(tmp_path / "CASME2-RAW" / "sub02" / "EP03_02", range(10, 41), "img{}.jpg")
    data = load_casme2(tmp_path)
    assert list(data.annotations["subject"]) == ["01", "02"]
    assert data.annotations.loc[0, "action_units"] == "4+L10"
    assert pd.isna(data.annotations.loc[1, "apex"]) and "apex '/'" in data.repairs[0]
    assert data.video("sub01/EP02_01f").frames(46, 50).shape == (5, 8, 8, 3)


def test_casme2_missing_clip_folder_names_row(tmp_path):
    pd.DataFrame([[1, "EP02_01f", 46, 59, 86, "4", "disgust"]],
                 columns=["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                          "Estimated Emotion"]).to_excel(tmp_path / "CASME2-coding-20140508.xlsx", index=False)
    with pytest.raises(DatasetError, match=r"CASME2-coding-20140508.xlsx, row 2: frame folder of video 'sub01/EP02_01f' is absent"):
        load_casme2(tmp_path)


# ---- SAMM ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_csv", [False, True])
def test_samm_workbook_and_csv(tmp_path, as_csv):
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    rows = [[6, "006_1_2", 1, 5562, 5588, 5607, 46, "Micro", "R12", "Other", 7, ""]]
    if as_csv:
        with_preamble(["preamble"] * 13, header, rows).to_csv(
            tmp_path / "SAMM_Micro_FACS_Codes_v2.csv", header=False, index=False)
    else:
        with_preamble(["SAMM"], header, rows).to_excel(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx",
                                                       header=False, index=False)
    frames(tmp_path / "SAMM" / "006" / "006_1_2", range(5560, 5610), "006_{:05d}.jpg")
    data = load_samm(tmp_path)
    row = data.annotations.iloc[0]
    assert (row["subject"], row["video"], row["onset"], row["apex"], row["offset"]) == ("006", "006_1_2", 5562, 5588, 5607)
    assert row["emotion"] == "others" and data.video("006_1_2").frame(5562).ndim == 2


# ---- SMIC and SMIC-E -----------------------------------------------------------------------------------

@pytest.mark.parametrize("subject_folder", ["s1", "s01"])
def test_smic_from_folders(tmp_path, subject_folder):
    for variant in ("HS", "NIR"):
        frames(tmp_path / variant / subject_folder / "micro" / "negative" / "s1_ne_01", range(100, 120), "image{:06d}.bmp")
        frames(tmp_path / variant / subject_folder / "micro" / "surprise" / "s1_sur_01", range(300, 310), "image{:06d}.bmp")
    data = load_smic(tmp_path, "NIR")
    assert data.name == "smic_nir" and list(data.annotations["subject"]) == ["s1", "s1"]
    assert list(data.annotations["emotion"]) == ["negative", "surprise"]
    assert list(data.annotations["onset"]) == [100, 300] and list(data.annotations["offset"]) == [119, 309]
    assert data.annotations["apex"].isna().all() and data.annotations["fps"].eq(25).all()
    assert len(load_smic(tmp_path / "HS", "HS").annotations) == 2  # the variant folder itself as root
    with pytest.raises(DatasetError, match="no SMIC subject folders"):
        load_smic(tmp_path, "VIS")


def test_smic_e_relative_frames(tmp_path):
    pd.DataFrame([[1, "s1_ne_01", 5030, 5060, "negative", 5000]],
                 columns=["Subject", "Filename", "OnsetF", "OffsetF", "Emotion", "FirstF"]).to_excel(
        tmp_path / "SMIC-HS-E_annotation.xlsx", index=False)
    frames(tmp_path / "HS_long" / "s01" / "s1_ne_01", range(5000, 5100), "image{:06d}.bmp")
    data = load_smic_e(tmp_path)
    row = data.annotations.iloc[0]
    assert (row["onset"], row["offset"]) == (30, 60)
    video = data.video("s1_ne_01")
    assert video.frame_path(30).name == "image005030.bmp"


# ---- CDE composite -------------------------------------------------------------------------------------

def test_cde_label_file_joins_components(tmp_path):
    casme2 = tmp_path / "casme2"
    casme2.mkdir()
    pd.DataFrame([[1, "EP02_01f", 46, 59, 86, "4", "disgust"]],
                 columns=["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                          "Estimated Emotion"]).to_excel(casme2 / "CASME2-coding-20190701.xlsx", index=False)
    smic = tmp_path / "smic"
    frames(smic / "HS" / "s3" / "micro" / "positive" / "s3_po_01", range(1, 10), "image{:06d}.bmp")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "combined_3class.csv").write_text("casme2,sub01,EP02_01f,0\nsmic,s03,s3_po_01,1\n")
    data = load_cde(labels, component_roots={"casme2": casme2, "smic": smic}, annotations_only=True)
    assert list(data.annotations["subject"]) == ["casme2/01", "smic/s3"]
    assert list(data.annotations["emotion"]) == ["negative", "positive"]
    (labels / "combined_3class.csv").write_text("casme2,sub01,EP99_99,0\n")
    with pytest.raises(DatasetError, match=r"combined_3class.csv, row 2: casme2 has no clip 'EP99_99'"):
        load_cde(labels, component_roots={"casme2": casme2}, annotations_only=True)


def test_registry_names_and_real_sets_need_root():
    with pytest.raises(DatasetError, match="pass root="):
        load_dataset("casme_sq")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("casme3")
