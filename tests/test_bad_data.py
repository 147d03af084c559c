"""Issue 20: bad input is one clear error naming the file, sheet and row (or value) — exit 2 from ``data check`` —
or a reported repair; never silently wrong. Bad copies are built in tmp_path, by hand or from the smoke sets."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mecore.__main__ import main
from mecore.data import DatasetError, Video, load_dataset
from mecore.data.loaders import (
    load_casme2,
    load_casme_sq,
    load_cde,
    load_samm_lv,
    load_smic_e,
)
from mecore.data.synthetic import with_preamble


def frames(folder: Path, numbers, pattern: str, size=(8, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        cv2.imwrite(str(folder / pattern.format(n)), np.full((*size, 3), n % 255, np.uint8))


def check(args: list[str], capsys) -> tuple[int, str, str]:
    """``python -m mecore data check ARGS``: exit code, stdout, stderr."""
    code = main(["data", "check", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


CASME_SQ_ROWS = [
    [1, "disgust1_1", 10, 14, 20, "4+L10", "negative", "micro-expression", "disgust"],
    [1, "disgust1_2", 30, 35, 40, "9", "negative", "macro-expression", "disgust"],
]


def casme_sq_copy(root: Path, rows=None, workbook: str = "CAS(ME)^2code_final.xlsx", with_frames: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(root / workbook) as book:
        pd.DataFrame(rows or CASME_SQ_ROWS).to_excel(book, sheet_name="CASFEcode_final", header=False, index=False)
        pd.DataFrame([[15, "s15", 1]]).to_excel(book, sheet_name="naming rule1", header=False, index=False)
        pd.DataFrame([["0101", "disgust1"]]).to_excel(book, sheet_name="naming rule2", header=False, index=False)
    if with_frames:
        frames(root / "rawpic" / "s15" / "15_0101disgustingteeth", range(1, 61), "img{:03d}.jpg")
    return root


SAMM_LV_HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
                  "Action Units", "Notes"]
SAMM_LV_ROWS = [[6, "006_1_1", 1, 5, 10, 30, 30, "Macro", "12", ""],
                [6, "006_1_2", 1, 40, -1, 50, 10, "Micro - 1/2", "R14", ""]]


def samm_lv_copy(root: Path, rows=None, workbook: str = "SAMM_LongVideos_V1_Release.xlsx") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with_preamble(["preamble"] * 9, SAMM_LV_HEADER, rows or SAMM_LV_ROWS).to_excel(
        root / workbook, sheet_name="FACS_Movement_Only", header=False, index=False)
    frames(root / "SAMM_longvideos" / "006_1", range(1, 61), "006_1_{:04d}.jpg")
    return root


CASME2_COLUMNS = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]


def casme2_copy(root: Path, rows) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=CASME2_COLUMNS).to_excel(root / "CASME2-coding-20140508.xlsx", index=False)
    for row in rows:
        frames(root / "CASME2-RAW" / f"sub{int(row[0]):02d}" / row[1], range(1, 61), "img{}.jpg")
    return root


def smoke_copy(smoke_root: Path, folder: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(smoke_root / folder, tmp_path / folder))


# ---- 3. impossible intervals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cells, message", [
    ([25, 14, 20], r"row 1: onset 25 is after offset 20"),
    ([-3, 4, 20], r"row 1: onset -3 is a negative frame number"),
    ([10, 30, 20], r"row 1: apex 30 is outside \[onset 10, offset 20\]"),
    ([10, 5, 0], r"row 1: onset 10 is after offset 5 \(offset 0 in the sheet, set to the apex\)"),
])
def test_casme_sq_impossible_interval_names_file_sheet_row(tmp_path, capsys, cells, message):
    row = [1, "disgust1_1", *cells, "4", "negative", "micro-expression", "disgust"]
    root = casme_sq_copy(tmp_path, rows=[row, CASME_SQ_ROWS[1]])
    with pytest.raises(DatasetError, match=r"code_final.xlsx, sheet CASFEcode_final, " + message):
        load_casme_sq(root)
    line = one_line_error(*check(["--dataset", "casme_sq", "--root", root], capsys)[::2])
    assert "sheet CASFEcode_final, row 1" in line and "correct the row" in line


def test_samm_lv_casme2_smic_e_impossible_intervals(tmp_path, capsys):
    rows = [SAMM_LV_ROWS[0], [6, "006_1_2", 1, 40, 55, 50, 10, "Micro - 1/2", "R14", ""]]
    root = samm_lv_copy(tmp_path / "lv", rows)
    with pytest.raises(DatasetError, match=r"V1_Release.xlsx, sheet FACS_Movement_Only, row 12: Apex 55 is outside"):
        load_samm_lv(root)
    root = samm_lv_copy(tmp_path / "lv2", [[6, "006_1_1", 1, 5, -7, 30, 30, "Macro", "12", ""]])
    with pytest.raises(DatasetError, match=r"row 11: Apex -7 is a negative frame number"):
        load_samm_lv(root)  # -1 is SAMM-LV's "not annotated"; any other negative number is an error
    root = casme2_copy(tmp_path / "c2", [[1, "EP02_01f", 46, 59, 40, "4", "disgust"]])
    with pytest.raises(DatasetError, match=r"20140508.xlsx, row 2: OnsetFrame 46 is after OffsetFrame 40"):
        load_casme2(root)
    assert "row 2: OnsetFrame 46 is after OffsetFrame 40" in \
        one_line_error(*check(["--dataset", "casme2", "--root", root], capsys)[::2])
    pd.DataFrame([[1, "s1_ne_01", 4990, 5060, "negative", 5000]],
                 columns=["Subject", "Filename", "OnsetF", "OffsetF", "Emotion", "FirstF"]).to_excel(
        tmp_path / "SMIC-HS-E_annotation.xlsx", index=False)
    with pytest.raises(DatasetError, match=r"row 2: OnsetF 4990 is before FirstF 5000"):
        load_smic_e(tmp_path, annotations_only=True)


# ---- 4. duplicate rows -----------------------------------------------------------------------------------------

def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path):
    sq = load_casme_sq(casme_sq_copy(tmp_path / "sq", rows=CASME_SQ_ROWS + [CASME_SQ_ROWS[0], CASME_SQ_ROWS[0]]))
    assert len(sq.annotations) == 2
    assert any(r.startswith("2 exact duplicate rows dropped") and "row 3 repeats 1, 4 repeats 1" in r for r in sq.repairs)
    lv = load_samm_lv(samm_lv_copy(tmp_path / "lv", SAMM_LV_ROWS + [SAMM_LV_ROWS[1]]))
    assert len(lv.annotations) == 2 and any("1 exact duplicate row dropped" in r and "row 13 repeats 12" in r
                                            for r in lv.repairs)
    rows = [[1, "EP02_01f", 5, 9, 20, "4", "disgust"]]
    c2 = casme2_copy(tmp_path / "c2", rows + rows)
    assert len(load_casme2(c2).annotations) == 1 and "row 3 repeats 2" in " ".join(load_casme2(c2).repairs)


def test_same_clip_twice_differently_is_an_error_naming_both_rows(tmp_path):
    root = casme2_copy(tmp_path, [[1, "EP02_01f", 5, 9, 20, "4", "disgust"], [1, "EP02_01f", 5, 9, 20, "4", "happiness"]])
    with pytest.raises(DatasetError, match=r"20140508.xlsx, rows 2 and 3: both annotate clip 'sub01/EP02_01f'"):
        load_casme2(root)


def test_same_interval_with_other_cells_is_reported_and_kept(tmp_path):
    other = [1, "disgust1_3", 10, 14, 20, "4", "negative", "micro-expression", "anger"]
    data = load_casme_sq(casme_sq_copy(tmp_path, rows=CASME_SQ_ROWS + [other]))
    assert len(data.annotations) == 3
    assert any("annotates an interval another row annotates too" in r and "rows 3 and 1" in r for r in data.repairs)


def test_cde_duplicate_lines(tmp_path, smoke_root):
    shutil.copytree(smoke_root / "casme2", tmp_path / "casme2")
    labels = tmp_path / "cde"
    labels.mkdir()
    line = "casme2,sub01,EP15_01f,0\n"
    (labels / "labels.csv").write_text("dataset,subject,filename,label\n" + line + line)
    data = load_cde(labels, annotations_only=True)
    assert len(data.annotations) == 1
    assert any("1 exact duplicate line dropped" in r and "line 3 repeats 2" in r for r in data.repairs)
    (labels / "labels.csv").write_text("dataset,subject,filename,label\n" + line + "casme2,sub01,EP15_01f,2\n")
    with pytest.raises(DatasetError, match=r"labels.csv, rows 2 and 3: both label casme2 clip 'EP15_01f'"):
        load_cde(labels, annotations_only=True)


# ---- 5. empty datasets ------------------------------------------------------------------------------------------

def test_root_one_level_too_high_is_an_error_saying_where(tmp_path, capsys):
    casme_sq_copy(tmp_path / "copy")
    line = one_line_error(*check(["--dataset", "casme_sq", "--root", tmp_path], capsys)[::2])
    assert f"{tmp_path / 'rawpic'}: no usable video of casme_sq" in line
    assert f"but {tmp_path / 'copy' / 'rawpic'} does: pass {tmp_path / 'copy'} as the root" in line


def test_missing_frame_folder_is_an_error(tmp_path, capsys, smoke_root):
    root = smoke_copy(smoke_root, "casme_sq", tmp_path)
    shutil.rmtree(root / "rawpic")
    line = one_line_error(*check(["--dataset", "casme_sq", "--root", root], capsys)[::2])
    assert f"{root / 'rawpic'}: no usable video" in line and "does not exist" in line


def test_workbook_without_rows_is_an_error(tmp_path):
    root = samm_lv_copy(tmp_path, rows=[[None] * 10])
    with pytest.raises(DatasetError, match=r"FACS_Movement_Only: no annotation row to load"):
        load_samm_lv(root, annotations_only=True)


# ---- 6. which workbook ------------------------------------------------------------------------------------------

def test_newest_samm_lv_workbook_wins_and_is_named(tmp_path, capsys):
    root = samm_lv_copy(tmp_path, workbook="SAMM_LongVideos_V1_Release.xlsx")
    samm_lv_copy(tmp_path, rows=SAMM_LV_ROWS[:1], workbook="SAMM_LongVideos_V3_Release.xlsx")
    data = load_samm_lv(root)
    assert data.sources == [root / "SAMM_LongVideos_V3_Release.xlsx"] and len(data.annotations) == 1
    assert any(r.startswith("2 SAMM-LV annotation workbooks found: read SAMM_LongVideos_V3_Release.xlsx")
               and "not read: SAMM_LongVideos_V1_Release.xlsx" in r for r in data.repairs)
    code, out, _ = check(["--dataset", "samm_lv", "--root", root], capsys)
    assert code == 0 and f"Annotations read from: {root / 'SAMM_LongVideos_V3_Release.xlsx'}" in out
    code, out, _ = check(["--dataset", "samm_lv", "--root", root, "--workbook", "SAMM_LongVideos_V1_Release.xlsx"],
                         capsys)
    assert code == 0 and "V1_Release.xlsx" in out.splitlines()[1] and "expressions={'macro': 1, 'micro': 1}" in out


def test_loso_names_the_workbook_it_read_its_repairs_and_takes_workbook(tmp_path, capsys, smoke_root):
    """A LOSO run says what ``data check`` says of its data (issue: loso never named the workbook, and a duplicate
    interval it counted twice was reported by data check only); ``--workbook`` picks another release."""
    root = smoke_copy(smoke_root, "samm_lv", tmp_path)
    newest = root / "SAMM_LongVideos_V2_Release.xlsx"
    shutil.copy(newest, root / "SAMM_LongVideos_V1_Release.xlsx")
    run = ["loso", "--model", "mdmd", "--dataset", "samm_lv", "--root", str(root), "--profile", "smoke",
           "--scheduler", "sync", "--folds", "1", "--results", str(tmp_path / "runs")]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert f"samm_lv: annotations read from {newest}" in out
    assert "samm_lv: 2 SAMM-LV annotation workbooks found: read SAMM_LongVideos_V2_Release.xlsx" in out
    assert main(run + ["--workbook", str(root / "SAMM_LongVideos_V1_Release.xlsx")]) == 0
    assert f"annotations read from {root / 'SAMM_LongVideos_V1_Release.xlsx'}" in capsys.readouterr().out
    assert main(["loso", "--model", "mdmd", "--dataset", "synth_smic_hs", "--profile", "smoke", "--workbook",
                 "x.xlsx"]) == 2
    assert "reads no workbook: drop --workbook" in capsys.readouterr().err


def test_updated_casme_sq_workbook_wins(tmp_path):
    root = casme_sq_copy(tmp_path)
    casme_sq_copy(tmp_path, rows=CASME_SQ_ROWS[:1], workbook="CAS(ME)^2code_final(Updated).xlsx", with_frames=False)
    data = load_casme_sq(root)
    assert data.sources[0].name == "CAS(ME)^2code_final(Updated).xlsx" and len(data.annotations) == 1
    assert any("read CAS(ME)^2code_final(Updated).xlsx" in r for r in data.repairs)


# ---- 7. frames cut short, mixed sizes ---------------------------------------------------------------------------

def test_truncated_jpeg_frame_is_named(tmp_path, capsys, smoke_root):
    root = smoke_copy(smoke_root, "casme_sq", tmp_path)
    data = load_dataset("casme_sq", root=root)
    video = next(iter(data.videos.values()))
    path = video.frame_path(video.first_frame + 5)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError, match=re.escape(f"{path}: truncated JPEG")):
        video.frame(video.first_frame + 5)
    assert f"{path}: truncated JPEG" in one_line_error(*check(["--dataset", "casme_sq", "--root", root], capsys)[::2])
    path.write_bytes(b"\xff\xd8 not really a JPEG \xff\xd9")
    with pytest.raises(DatasetError, match=re.escape(f"{path}: not a readable image")):
        video.frame(video.first_frame + 5)


def test_truncated_png_and_bmp_are_named(tmp_path):
    for suffix in (".png", ".bmp"):
        folder = tmp_path / suffix[1:]
        frames(folder, range(1, 4), "img{}" + suffix)
        path = folder / f"img2{suffix}"
        path.write_bytes(path.read_bytes()[:-20])
        video = Video("x", "s1", "v", folder, 30.0)
        with pytest.raises(DatasetError, match=re.escape(f"{path}: truncated {suffix[1:].upper()}")):
            video.verify_files()
        with pytest.raises(DatasetError, match=re.escape(f"{path}: truncated")):
            video.frame(2)


def test_mixed_frame_sizes_name_the_odd_file(tmp_path, capsys):
    root = casme_sq_copy(tmp_path)
    folder = root / "rawpic" / "s15" / "15_0101disgustingteeth"
    frames(folder, [33], "img{:03d}.jpg", size=(10, 12))
    line = one_line_error(*check(["--dataset", "casme_sq", "--root", root], capsys)[::2])
    assert f"{folder / 'img033.jpg'}: frame is 12x10 pixels, but 59 of the 60 frames" in line
    video = load_casme_sq(root).video("15_0101")
    video.frame(1)
    with pytest.raises(DatasetError, match=r"img033.jpg: frame is 12x10 pixels, but frame img001.jpg .* is 8x8"):
        video.frame(33)


# ---- 8. frame numbering -----------------------------------------------------------------------------------------

def test_a_file_without_number_is_an_error_in_every_numbering(tmp_path):
    folder = tmp_path / "clip"
    frames(folder, range(10, 18), "image{:06d}.bmp")
    cv2.imwrite(str(folder / "cover.jpg"), np.zeros((8, 8, 3), np.uint8))
    for numbering in ("name", "position"):
        with pytest.raises(DatasetError, match=re.escape(f"{folder / 'cover.jpg'}: frame file name has no frame number")):
            _ = Video("x", "s1", "clip", folder, 100.0, numbering=numbering).frame_files
    (folder / "cover.jpg").unlink()
    assert list(Video("x", "s1", "clip", folder, 100.0, numbering="position").frame_files) == list(range(8))


def test_two_files_of_one_number_are_named(tmp_path, capsys):
    root = casme_sq_copy(tmp_path)
    folder = root / "rawpic" / "s15" / "15_0101disgustingteeth"
    frames(folder, [7], "img{}.jpg")
    line = one_line_error(*check(["--dataset", "casme_sq", "--root", root], capsys)[::2])
    assert f"{folder / 'img007.jpg'} and {folder / 'img7.jpg'}: both are frame 7" in line


def test_gaps_are_reported_and_keep_position_numbering_aligned(tmp_path, capsys):
    root = casme_sq_copy(tmp_path)
    folder = root / "rawpic" / "s15" / "15_0101disgustingteeth"
    for n in (25, 26, 27, 50):
        (folder / f"img{n:03d}.jpg").unlink()
    code, out, _ = check(["--dataset", "casme_sq", "--root", root], capsys)
    assert code == 0 and "15_0101" in out and "4 frame numbers missing: 25-27, 50" in out
    clip = tmp_path / "clip"
    frames(clip, [5000, 5001, 5003], "image{:06d}.bmp")  # SMIC-E: position = number - first, so 5003 stays 3
    video = Video("x", "s1", "clip", clip, 100.0, numbering="position")
    assert list(video.frame_files) == [0, 1, 3] and video.gaps == [(2, 2)]


# ---- damaged annotation files, frame rates ---------------------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "the workbook is damaged or truncated"),
    (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (lambda p: p.write_text("Subject,Filename,Onset\n6,006_1_1,5\n"), "not an .xlsx workbook, its content is text"),
])
def test_damaged_workbook_is_one_line(tmp_path, capsys, damage, message):
    root = samm_lv_copy(tmp_path)
    damage(root / "SAMM_LongVideos_V1_Release.xlsx")
    line = one_line_error(*check(["--dataset", "samm_lv", "--root", root], capsys)[::2])
    assert f"{root / 'SAMM_LongVideos_V1_Release.xlsx'}: {message}" in line


def test_a_valid_zip_with_a_cut_sheet_is_one_line(tmp_path, capsys):
    """The zip directory is whole but a sheet's XML is cut (a copy interrupted mid-file, then re-zipped)."""
    import zipfile

    root = samm_lv_copy(tmp_path)
    book = root / "SAMM_LongVideos_V1_Release.xlsx"
    with zipfile.ZipFile(book) as source:
        members = {name: source.read(name) for name in source.namelist()}
    sheet = next(name for name in members if name.startswith("xl/worksheets/sheet"))
    members[sheet] = members[sheet][: len(members[sheet]) // 2]
    with zipfile.ZipFile(book, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    line = one_line_error(*check(["--dataset", "samm_lv", "--root", root], capsys)[::2])
    assert f"{book}: the workbook is damaged or truncated (ParseError" in line


def test_smic_subject_folders_in_any_spelling_and_never_merged_unseen(tmp_path, smoke_root):
    root = smoke_copy(smoke_root, "smic", tmp_path)
    base = root / "HS" if (root / "HS").is_dir() else root
    first = sorted(p for p in base.iterdir() if p.is_dir())[0]  # s1, say
    before = load_dataset("smic_hs", root=root, annotations_only=True)
    first.rename(first.with_name(first.name.upper()))  # S1: still subject s1
    after = load_dataset("smic_hs", root=root, annotations_only=True)
    pd.testing.assert_frame_equal(before.annotations.drop(columns="source_row"),
                                  after.annotations.drop(columns="source_row"))
    twin = first.with_name(f"s0{first.name[1:]}")  # s01 beside S1: one subject in two folders
    shutil.copytree(first.with_name(first.name.upper()), twin)
    with pytest.raises(DatasetError, match=f"both are SMIC subject s{int(first.name[1:])}; keep one of them"):
        load_dataset("smic_hs", root=root, annotations_only=True)
    shutil.rmtree(twin)
    shutil.rmtree(first.with_name(first.name.upper()) / "micro")
    without = load_dataset("smic_hs", root=root, annotations_only=True)
    assert any("no micro/ folder" in repair and first.name.upper() in repair for repair in without.repairs)


def test_empty_cde_label_file_is_one_line(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("")
    line = one_line_error(*check(["--dataset", "cde", "--root", tmp_path / "labels.csv"], capsys)[::2])
    assert f"{tmp_path / 'labels.csv'}: the CDE label file is empty" in line


def test_zero_or_negative_fps_is_an_error_naming_the_value(tmp_path, smoke_root):
    with pytest.raises(DatasetError, match=r"clip: video 'v': frame rate must be a positive number .* got 0"):
        Video("x", "s1", "v", tmp_path / "clip", 0)
    data = load_dataset("synth_samm_lv", profile="smoke", annotations_only=True)
    for fps in (0, -30, float("nan")):
        with pytest.raises(DatasetError, match=r"'synth_samm_lv': max_fps: frame rate must be a positive"):
            data.at_most_fps(fps)
    assert data.at_most_fps(30).video("006_1").frame_step == 7


def test_clean_synthetic_sets_gain_no_repair():
    assert load_dataset("synth_casme_sq", profile="smoke").repairs == [
        "1 rows had offset 0 (unannotated); set offset := apex, interval [onset, apex]",
        "1 rows had apex 0; apex set to not annotated"]
