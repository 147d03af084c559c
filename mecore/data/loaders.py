"""Loaders for the real datasets' on-disk layouts (workbooks, sheets, frame folders), one function per dataset.

Every loader returns a :class:`~mecore.data.dataset.Dataset` whose annotation table has the common
columns, and records each repair it made to the raw annotations in ``Dataset.repairs``. Bad input
raises :class:`~mecore.data.dataset.DatasetError` naming the file (and row). Documented rules:

* CAS(ME)^2 — a macro row with offset 0 (unannotated) gets offset := apex, i.e. the interval
  [onset, apex], the repair of the MEGC 2020 baseline code; apex 0 becomes "not annotated" (NA); a
  row with neither offset nor apex is skipped. Annotated videos whose frame folder is absent are
  skipped with a report (the public release has frames for fewer videos than the workbook names).
* SAMM-LV — float frame numbers are rounded; apex -1 becomes NA; an onset before the first frame
  is moved to the first frame. The video of a row is its Filename without the last ``_N``.
* CASME II — an apex written ``/`` becomes NA; subjects are zero-padded (``1`` -> ``01``).
* SAMM — emotions are lower-cased, ``Other`` becomes ``others`` (the CASME II spelling).
* SMIC — no workbook: labels come from the folders, onset/offset are the clip's first/last frame,
  apex is NA (it is spotted later, FR paper Eq. 1). Subjects are written ``s1`` (``s01`` accepted).
* SMIC-E — frames are numbered by position; onset/offset are made video-relative (``- FirstF``).
* Long videos (CAS(ME)^2, SAMM-LV) — when frames are read, video folders that no annotation row names
  are loaded too, as videos with no expression: the MEGC protocol spots and scores every video
  (real CAS(ME)^2 has 98 videos, 95 of them annotated). Their number is reported; folders without
  frame images are ignored, and folders that do not follow the dataset's naming are reported.
  SMIC-E is left out: each of its long clips is cut around the micro-expression it is named after.
* Subjects are strings everywhere; frame numbers are the numbers in the frame file names.

Checks on every dataset (issue 20), each an error naming the file, sheet and row unless said otherwise:

* Intervals: a negative frame number, an onset after its offset, or an apex outside [onset, offset]
  (after the documented repairs above) is an error.
* Duplicates: a row whose cells repeat an earlier row's exactly is dropped, and the number dropped is
  reported in ``repairs``; two rows of one video that annotate the same interval and type but differ
  elsewhere are both kept and reported; a recognition clip (CASME II, SAMM, SMIC-E, a CDE line) named by
  two different rows is an error naming both.
* Workbooks: every known file name of the annotation workbook is looked for in the root and one
  folder below it. With several (SAMM-LV V1 and V3, CAS(ME)^2's original and ``(Updated)``), the
  newest release wins (the order of the ``*_WORKBOOKS`` tuples, newest first; copies in the root
  before those below it) and the choice is reported in ``repairs``; ``workbook=`` (``data check
  --workbook``) reads another. The file read is in ``Dataset.sources``. A workbook that is empty,
  truncated or not a workbook at all is an error saying so.
* Empty datasets: a workbook without annotation rows, or (frames read) a dataset left with no video,
  is an error saying where the frames were looked for.
"""
from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path
from xml.etree.ElementTree import ParseError

import pandas as pd

from .dataset import IMAGE_SUFFIXES, Dataset, DatasetError, Video, annotation_frame

# Known workbook names, newest release first: with several in one copy, the first listed is read (reported).
CASME_SQ_WORKBOOKS = ("CAS(ME)^2code_final(Updated).xlsx", "CAS(ME)^2code_final.xlsx", "code_final.xlsx",
                      "CASME_sq_gt.xlsx")
SAMM_LV_WORKBOOKS = ("SAMM_LongVideos_V3_Release.xlsx", "SAMM_LongVideos_V2_Release.xlsx",
                     "SAMM_LongVideos_V1_Release.xlsx", "SAMMLV_gt.xlsx")
CASME2_WORKBOOKS = ("CASME2-coding-20190701.xlsx", "CASME2-coding-20190701.csv", "CASME2-coding-20140508.xlsx",
                    "CASME2-coding-20140508.csv")
SAMM_WORKBOOKS = ("SAMM_Micro_FACS_Codes_v2.xlsx", "SAMM_Micro_FACS_Codes_v2.csv")
SMIC_E_WORKBOOKS = ("SMIC-HS-E_annotation.xlsx",)
SMIC_FPS = {"HS": 100.0, "VIS": 25.0, "NIR": 25.0}


# ---- shared helpers -------------------------------------------------------------------------------

def require_root(root) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root does not exist or is not a folder")
    return root


def find_file(root: Path, names: tuple[str, ...], what: str, repairs: list[str] | None = None,
              chosen: str | Path | None = None) -> Path:
    """The annotation file to read: ``chosen`` if given (relative to ``root``), else the first of ``names``
    (newest release first) found in ``root`` or one folder below it (case-insensitive). When several are
    found, the choice and the files left unread are reported in ``repairs``."""
    if chosen is not None:
        path = Path(chosen).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DatasetError(f"{path}: the {what} chosen (workbook=, --workbook) does not exist")
        return path
    rank = {n.lower(): k for k, n in enumerate(names)}
    found = []
    for depth, folder in enumerate([root] + sorted(p for p in root.iterdir() if p.is_dir())):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name.lower() in rank:
                found.append((rank[path.name.lower()], min(depth, 1), str(path), path))
    if not found:
        raise DatasetError(f"{root}: no {what} found; expected one of {', '.join(names)}")
    found.sort()
    book = found[0][3]
    if len(found) > 1 and repairs is not None:
        others = ", ".join(str(p.relative_to(root)) for *_, p in found[1:])
        repairs.append(f"{len(found)} {what}s found: read {book.relative_to(root)} (newest release first: "
                       f"{' > '.join(names)}); not read: {others}; pass workbook= (--workbook of data check, loso or plan) to read another")
    return book


def read_table(path: Path, sheet: str | int = 0, header=None) -> pd.DataFrame:
    """A sheet of a workbook (or a CSV) as strings-or-numbers; a clear error for a wrong sheet, an empty,
    truncated or mislabelled file."""
    csv = path.suffix.lower() == ".csv"
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None
    if not head:
        raise DatasetError(f"{path}: the file is empty (0 bytes); copy it again from the dataset release")
    if not csv and path.suffix.lower() in (".xlsx", ".xlsm") and not head.startswith(b"PK\x03\x04"):
        if head.startswith(b"\xd0\xcf\x11\xe0"):
            kind = "an old-format .xls workbook"
        elif b"\x00" not in head:
            kind = "text (a CSV file?)"
        else:
            kind = "neither"
        raise DatasetError(f"{path}: not an .xlsx workbook, its content is {kind}; open it in a spreadsheet program "
                           f"and save it as .xlsx (or give a CSV its .csv name)")
    try:
        if csv:
            return pd.read_csv(path, header=header, dtype=object, skip_blank_lines=False)
        return pd.read_excel(path, sheet_name=sheet, header=header, dtype=object)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file holds no table (no columns); copy it again from the dataset release") from None
    except (zipfile.BadZipFile, ParseError) as error:  # a cut zip, or a valid zip holding a cut sheet
        raise DatasetError(f"{path}: the workbook is damaged or truncated ({type(error).__name__}: {error}); copy it "
                           f"again from the dataset release") from None
    except ValueError as error:
        if not csv and "not found" in str(error).lower():
            sheets = pd.ExcelFile(path).sheet_names
            raise DatasetError(f"{path}: no sheet {sheet!r}; the workbook has {sheets}") from None
        raise DatasetError(f"{path}: cannot read ({' '.join(str(error).split())})") from None
    except (OSError, KeyError, EOFError) as error:
        raise DatasetError(f"{path}: cannot read the workbook ({type(error).__name__}: {error}); copy it again from "
                           f"the dataset release") from None


def header_row(table: pd.DataFrame, first: str, path: Path) -> pd.DataFrame:
    """Drop preamble rows: the header is the first row whose first cell is ``first``."""
    if table.shape[1] == 0:
        raise DatasetError(f"{path}: the sheet is empty; expected a header row starting with {first!r}")
    for i, value in enumerate(table.iloc[:, 0].tolist()):
        if isinstance(value, str) and value.strip().lower() == first.lower():
            body = table.iloc[i + 1:].copy()
            body.columns = [str(c).strip() if isinstance(c, str) else f"Unnamed: {k}"
                            for k, c in enumerate(table.iloc[i].tolist())]
            body.attrs["first_row"] = i + 2  # spreadsheet row number of the first data row
            return body.dropna(how="all")
    raise DatasetError(f"{path}: no header row starting with {first!r}")


def workbook_rows(root: Path, names: tuple[str, ...], what: str, columns: list[str], sheet: str | int = 0,
                  repairs: list[str] | None = None, chosen=None) -> tuple[Path, str, list[tuple[int, dict]]]:
    """Find a workbook, skip its preamble, check its columns; return it, its name for messages (with the
    sheet) and its (row number, cells), exact duplicate rows dropped and reported in ``repairs``."""
    book = find_file(root, names, what, repairs, chosen)
    where = f"{book}, sheet {sheet}" if isinstance(sheet, str) else str(book)
    table = header_row(read_table(book, sheet), columns[0], book)
    require_columns(table, columns, book)
    first = table.attrs["first_row"]
    records = [(first + k, cells) for k, cells in enumerate(table.to_dict("records"))]
    return book, where, drop_duplicate_rows(records, where, repairs if repairs is not None else [])


def _cell_key(value):
    if is_blank(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def drop_duplicate_rows(records: list[tuple[int, object]], where: str, repairs: list[str],
                        what: str = "row") -> list[tuple[int, object]]:
    """``records`` (row number, cells) without the rows whose cells repeat an earlier row's exactly; how many
    were dropped, and which, goes to ``repairs``."""
    seen, kept, dropped = {}, [], []
    for row, cells in records:
        values = cells.values() if isinstance(cells, dict) else cells
        key = tuple(_cell_key(v) for v in values)
        if key in seen:
            dropped.append(f"{row} repeats {seen[key]}")
            continue
        seen[key] = row
        kept.append((row, cells))
    if dropped:
        shown = ", ".join(dropped[:6]) + (f", and {len(dropped) - 6} more" if len(dropped) > 6 else "")
        repairs.append(f"{len(dropped)} exact duplicate {what}{'s' if len(dropped) > 1 else ''} dropped from {where} "
                       f"({what} {shown})")
    return kept


def check_negative(where: str, row, values: dict[str, int | None], note: str = "") -> None:
    """Frame numbers are >= 0: a negative one is an error naming the row, the column and the value."""
    for name, value in values.items():
        if value is not None and value < 0:
            raise DatasetError(f"{where}, row {row}: {name} {value} is a negative frame number{note}; correct the row")


def check_interval(where: str, row, onset: int, apex: int | None, offset: int,
                   names=("onset", "apex", "offset"), note: str = "") -> None:
    """An annotated interval must be possible: frame numbers >= 0, onset <= offset, apex in [onset, offset]."""
    check_negative(where, row, dict(zip(names, (onset, apex, offset))), note)
    if onset > offset:
        raise DatasetError(f"{where}, row {row}: {names[0]} {onset} is after {names[2]} {offset}{note}; correct the row")
    if apex is not None and not onset <= apex <= offset:
        raise DatasetError(f"{where}, row {row}: {names[1]} {apex} is outside [{names[0]} {onset}, {names[2]} {offset}]"
                           f"{note}; correct the row")


def note_same_intervals(rows: list[dict], where: str, repairs: list[str]) -> None:
    """Report rows of one video that annotate the same interval and type but are not exact duplicates (both kept)."""
    first, same = {}, []
    for row in rows:
        key = (row["video"], row["onset"], row["offset"], row["type"])
        if key in first:
            same.append(f"{row['source_row']} and {first[key]} ({row['type']} {row['onset']}..{row['offset']} of "
                        f"{row['video']})")
        else:
            first[key] = row["source_row"]
    if same:
        shown = "; ".join(same[:6]) + (f"; and {len(same) - 6} more" if len(same) > 6 else "")
        repairs.append(f"{len(same)} row{'s' if len(same) > 1 else ''} of {where} annotate{'s' if len(same) == 1 else ''} "
                       f"an interval another row annotates too, with other cells differing; both kept: rows {shown}")


def unique_clips(rows: list[dict], where: str) -> None:
    """A recognition clip is one sample: two different rows naming one clip is an error naming both."""
    first = {}
    for row in rows:
        if row["video"] in first:
            raise DatasetError(f"{where}, rows {first[row['video']]} and {row['source_row']}: both annotate clip "
                               f"{row['video']!r} with different cells; keep the right one")
        first[row["video"]] = row["source_row"]


def require_columns(table: pd.DataFrame, columns, path: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")


def is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


class FrameParser:
    """Parses frame-number cells, counting the repairs it makes (rounded floats)."""

    def __init__(self, path: Path | str):
        self.path = path  # the file, optionally with its sheet
        self.rounded = 0

    def __call__(self, value, row: int, column: str, allow=()) -> int | None:
        if isinstance(value, str) and value.strip() in allow:
            return None
        if is_blank(value):
            if None in allow:
                return None
            raise DatasetError(f"{self.path}, row {row}: {column} is empty")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{self.path}, row {row}: {column} {value!r} is not a frame number") from None
        if not number.is_integer():
            self.rounded += 1
        return int(round(number))


def check_frames(videos: dict[str, Video], annotations: pd.DataFrame, repairs: list[str], skip_missing: bool,
                 source: Path | str, hint: str = "") -> pd.DataFrame:
    """Every annotated row must have its frame folder with frames up to the offset."""
    keep = []
    for i, row in annotations.iterrows():
        video = videos.get(row["video"])
        problem = None
        if video is None or not video.folder.is_dir():
            problem = f"frame folder of video {row['video']!r} is absent" + (f" ({video.folder})" if video else "")
        elif video.last_frame < row["offset"] or video.first_frame > row["onset"]:
            problem = (f"frames {video.first_frame}..{video.last_frame} in {video.folder} do not cover "
                       f"the annotated {row['onset']}..{row['offset']}")
        if problem is None:
            keep.append(i)
        elif skip_missing:
            repairs.append(f"skipped {row['video']} {row['onset']}-{row['offset']} (row {row.get('source_row', i)}): "
                           f"{problem}")
        else:
            raise DatasetError(f"{source}, row {row.get('source_row', i)}: {problem}{hint if video else ''}")
    return annotations.loc[keep].reset_index(drop=True)


def frames_hint(frames_root: Path | None, book: Path | None) -> str:
    """What to do when the frame folder is absent: the root is wrong (one level too high, say)."""
    if frames_root is None or frames_root.is_dir():
        return ""
    near = book.parent / frames_root.name if book is not None else None
    if near is not None and near != frames_root and near.is_dir():
        return f"; {frames_root} does not exist, but {near} does: pass {book.parent} as the root (--root)"
    return (f"; {frames_root} does not exist: pass as the root (--root) the folder that holds the annotation file "
            f"and {frames_root.name}/")


def finish(name, root, rows, videos, repairs, kind, annotations_only, skip_missing, source,
           scan_folders=None, frames_root: Path | None = None, book: Path | None = None) -> Dataset:
    """The dataset; with frames, rows are checked against them and, given ``scan_folders`` (a function
    returning the frames root, the videos found in it and the folders not named as the dataset names
    them), videos that no row names are added (:func:`add_unannotated`). No annotation row, or (frames
    read) no usable video, is an error saying where the frames were looked for."""
    if not rows:
        raise DatasetError(f"{source}: no annotation row to load" + (f" (after: {'; '.join(repairs)})" if repairs else "")
                           + "; is this the dataset's annotation file?")
    if kind == "spotting":
        note_same_intervals(rows, str(source), repairs)
    else:
        unique_clips(rows, str(source))
    annotations = annotation_frame(rows)
    hint = frames_hint(frames_root, book)
    if not annotations_only:
        annotations = check_frames(videos, annotations, repairs, skip_missing, source, hint)
        videos = {k: v for k, v in videos.items() if v.folder.is_dir()}
        if scan_folders is not None:
            videos = add_unannotated(videos, *scan_folders(), repairs)
        if not videos:
            looked = frames_root or Path(root)
            raise DatasetError(f"{looked}: no usable video of {name}: none of the {len({r['video'] for r in rows})} "
                               f"annotated videos has its frame folder there{hint or ''}")
    return Dataset(name, root, annotations, videos, repairs, kind, sources=[book] if book is not None else [])


def has_frames(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def add_unannotated(videos: dict[str, Video], frames_root: Path, found: list[Video], misnamed: list[Path],
                    repairs: list[str], shown: int = 6) -> dict[str, Video]:
    """``videos`` plus the ``found`` videos whose folder no annotated video reads (MEGC: every video is
    spotted and scored), each reported in ``repairs``; so are ``misnamed`` folders and name clashes."""
    def where(path: Path) -> str:
        return path.relative_to(frames_root).as_posix() if path.is_relative_to(frames_root) else str(path)

    def listed(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (f", and {len(items) - shown} more" if len(items) > shown else "")

    annotated = {video.folder.resolve() for video in videos.values()}
    videos, added, clashes = dict(videos), [], []
    for video in found:
        if video.folder.resolve() in annotated:
            continue
        if video.name in videos:
            clashes.append(f"{where(video.folder)} (video {video.name} is {where(videos[video.name].folder)})")
            continue
        videos[video.name] = video
        added.append(where(video.folder) + ("" if video.folder.name == video.name else f" as {video.name}"))
    if added:
        repairs.append(f"{len(added)} video folder{'s carry' if len(added) > 1 else ' carries'} no annotation "
                       f"({listed(added)}); they are spotted and scored like the others (MEGC protocol)")
    if misnamed:
        repairs.append(f"{len(misnamed)} folder{'s' if len(misnamed) > 1 else ''} of frames under {frames_root} "
                       f"do{'es' if len(misnamed) == 1 else ''} not follow the dataset's naming, not loaded: "
                       f"{listed([where(p) for p in misnamed])}")
    if clashes:
        repairs.append(f"{len(clashes)} video folder{'s' if len(clashes) > 1 else ''} name{'s' if len(clashes) == 1 else ''} "
                       f"a video already loaded from another folder, not loaded: {listed(clashes)}")
    return videos


# ---- CAS(ME)^2 ------------------------------------------------------------------------------------

def load_casme_sq(root, annotations_only: bool = False, frames_dir: str = "rawpic", name: str = "casme_sq",
                  workbook: str | Path | None = None) -> Dataset:
    """CAS(ME)^2 long videos: workbook sheets ``CASFEcode_final``, ``naming rule1``, ``naming rule2``."""
    root = require_root(root)
    rows, videos, repairs = [], {}, []
    book = find_file(root, CASME_SQ_WORKBOOKS, "CAS(ME)^2 annotation workbook", repairs, workbook)
    codes_sheet = read_table(book, "CASFEcode_final")
    rule1 = read_table(book, "naming rule1")
    rule2 = read_table(book, "naming rule2")
    folders = {}
    for k, cells in rule1.iloc[:, :3].dropna().iterrows():
        try:
            raw, folder, participant = cells
            folders[int(float(participant))] = (str(int(float(raw))), str(folder).strip())
        except (TypeError, ValueError):
            raise DatasetError(f"{book}, sheet naming rule1, row {k + 1}: expected a raw subject number, a folder "
                               f"and a participant number, found {list(cells)}") from None
    video_codes = {}
    for _, (code, video) in rule2.iloc[:, :2].dropna().iterrows():
        code = str(code).strip()
        video_codes[str(video).strip()] = code.zfill(4) if code.isdigit() else code
    where = f"{book}, sheet CASFEcode_final"
    parse = FrameParser(where)
    offset_repaired = apex_missing = skipped = 0
    frames_root = root / frames_dir
    records = [(i, list(cells)) for i, cells in enumerate(codes_sheet.itertuples(index=False), start=1)
               if not all(is_blank(c) for c in cells)]
    for i, cells in drop_duplicate_rows(records, where, repairs):
        if len(cells) < 8:
            raise DatasetError(f"{where}, row {i}: expected 8+ columns, found {len(cells)}")
        participant, expression, onset, apex, offset, aus, emotion, kind = cells[:8]
        try:
            raw, folder = folders[int(float(participant))]
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where}, row {i}: participant {participant!r} "
                               f"is not in sheet 'naming rule1'") from None
        video_name = re.sub(r"_\d+$", "", str(expression).strip())
        if video_name not in video_codes:
            raise DatasetError(f"{where}, row {i}: expression {expression!r} names video "
                               f"{video_name!r}, which is not in sheet 'naming rule2'")
        code = video_codes[video_name]
        onset = parse(onset, i, "onset")
        apex = parse(apex, i, "apex")
        offset = parse(offset, i, "offset")
        check_negative(where, i, {"onset": onset, "apex": apex, "offset": offset})  # before the repairs
        kind_text = str(kind).strip().lower()
        if kind_text.startswith("macro"):
            kind = "macro"
        elif kind_text.startswith("micro"):
            kind = "micro"
        else:
            raise DatasetError(f"{where}, row {i}: type {kind!r} is neither macro nor micro")
        if apex == 0:
            apex, apex_missing = None, apex_missing + 1
        note = ""
        if offset == 0:
            if apex is None:
                skipped += 1
                repairs.append(f"skipped row {i} ({expression}): neither offset nor apex annotated")
                continue
            offset, offset_repaired, note = apex, offset_repaired + 1, " (offset 0 in the sheet, set to the apex)"
        check_interval(where, i, onset, apex, offset, note=note)
        key = f"{raw}_{code}"
        if key not in videos:
            videos[key] = Video(name, folder, key, _casme_sq_folder(frames_root / folder, code), 30.0)
        rows.append(dict(dataset=name, subject=folder, video=key, onset=onset, apex=apex, offset=offset,
                         type=kind, emotion=str(emotion).strip().lower(), action_units=str(aus).strip(),
                         fps=30.0, expression=str(expression).strip(), source_row=i))
    if offset_repaired:
        repairs.append(f"{offset_repaired} rows had offset 0 (unannotated); set offset := apex, interval [onset, apex]")
    if apex_missing:
        repairs.append(f"{apex_missing} rows had apex 0; apex set to not annotated")
    _note_rounding(parse, repairs)
    raws = {folder: raw for raw, folder in folders.values()}
    known_codes = set(video_codes.values())
    return finish(name, root, rows, videos, repairs, "spotting", annotations_only, True, where,
                  lambda: _casme_sq_scan(name, frames_root, raws, known_codes), frames_root, book)


def _casme_sq_scan(name: str, frames_root: Path, raws: dict[str, str], codes: set[str]) -> tuple[Path, list, list]:
    """Every video folder with frames: ``{subject}/{raw}_{code}{words}`` -> video ``{raw}_{code}`` of subject
    ``{subject}`` (``sNN`` or a folder of sheet 'naming rule1'; ``raw`` from that sheet, else the folder's)."""
    found, misnamed = [], []
    if not frames_root.is_dir():
        return frames_root, found, misnamed
    for subject_folder in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        subject = subject_folder.name
        if subject not in raws and not re.fullmatch(r"s\d+", subject):
            if has_frames(subject_folder) or any(has_frames(p) for p in subject_folder.iterdir() if p.is_dir()):
                misnamed.append(subject_folder)
            continue
        for folder in sorted(p for p in subject_folder.iterdir() if p.is_dir()):
            if not has_frames(folder):
                continue
            match = re.match(r"(\d+)_(.{4})", folder.name)
            if match is None or not (match.group(2).isdigit() or match.group(2) in codes):
                misnamed.append(folder)
                continue
            key = f"{raws.get(subject, str(int(match.group(1))))}_{match.group(2)}"
            found.append(Video(name, subject, key, folder, 30.0))
    return frames_root, found, misnamed


def _casme_sq_folder(subject_folder: Path, code: str) -> Path:
    """The video folder whose 4 characters after the first underscore are the video code."""
    if subject_folder.is_dir():
        for folder in sorted(subject_folder.iterdir()):
            if folder.is_dir() and "_" in folder.name and folder.name.split("_", 1)[1][:4] == code:
                return folder
    return subject_folder / f"?_{code}"


def _note_rounding(parse: FrameParser, repairs: list[str]) -> None:
    if parse.rounded:
        repairs.append(f"{parse.rounded} frame numbers were not integers (e.g. 566.40000000000009); rounded")


# ---- SAMM Long Videos -----------------------------------------------------------------------------

def load_samm_lv(root, annotations_only: bool = False, frames_dir: str = "SAMM_longvideos", name: str = "samm_lv",
                 workbook: str | Path | None = None) -> Dataset:
    """SAMM Long Videos: sheet ``FACS_Movement_Only`` after preamble rows; 200 fps; grey frames."""
    root = require_root(root)
    rows, videos, repairs = [], {}, []
    book, where, records = workbook_rows(root, SAMM_LV_WORKBOOKS, "SAMM-LV annotation workbook",
                                         ["Subject", "Filename", "Onset", "Apex", "Offset", "Type"],
                                         "FACS_Movement_Only", repairs, workbook)
    parse = FrameParser(where)
    apex_missing = onset_moved = 0
    for i, cells in records:
        filename = str(cells["Filename"]).strip()
        video_name = filename.rsplit("_", 1)[0]
        subject = _subject_number(cells["Subject"], where, i, width=3)
        onset = parse(cells["Onset"], i, "Onset")
        apex = parse(cells["Apex"], i, "Apex")
        offset = parse(cells["Offset"], i, "Offset")
        if apex == -1:
            apex, apex_missing = None, apex_missing + 1
        check_interval(where, i, onset, apex, offset, ("Onset", "Apex", "Offset"))
        kind_text = str(cells["Type"]).strip().lower()
        if kind_text.startswith("macro"):
            kind = "macro"
        elif kind_text.startswith("micro"):
            kind = "micro"
        else:
            raise DatasetError(f"{where}, row {i}: Type {cells['Type']!r} is neither Macro nor Micro")
        if video_name not in videos:
            videos[video_name] = Video(name, subject, video_name, root / frames_dir / video_name, 200.0, grayscale=True)
        if not annotations_only and videos[video_name].folder.is_dir() and onset < videos[video_name].first_frame:
            onset, onset_moved = videos[video_name].first_frame, onset_moved + 1
            check_interval(where, i, onset, apex, offset, ("Onset", "Apex", "Offset"),
                           f" (Onset moved to the video's first frame {onset})")
        rows.append(dict(dataset=name, subject=subject, video=video_name, onset=onset, apex=apex, offset=offset,
                         type=kind, emotion=_samm_lv_emotion(cells), action_units=_text(cells.get("Action Units")),
                         fps=200.0, expression=filename, source_row=i))
    _note_rounding(parse, repairs)
    if apex_missing:
        repairs.append(f"{apex_missing} rows had apex -1 (not annotated); apex set to not annotated")
    if onset_moved:
        repairs.append(f"{onset_moved} rows had an onset before the video's first frame; moved to the first frame")
    return finish(name, root, rows, videos, repairs, "spotting", annotations_only, False, where,
                  lambda: _samm_lv_scan(name, root / frames_dir), root / frames_dir, book)


def _samm_lv_scan(name: str, frames_root: Path) -> tuple[Path, list, list]:
    """Every video folder with frames: ``006_1`` -> video ``006_1`` of subject ``006``."""
    found, misnamed = [], []
    if not frames_root.is_dir():
        return frames_root, found, misnamed
    for folder in sorted(p for p in frames_root.iterdir() if p.is_dir() and has_frames(p)):
        match = re.fullmatch(r"(\d+)_\d+", folder.name)
        if match is None:
            misnamed.append(folder)
            continue
        found.append(Video(name, str(int(match.group(1))).zfill(3), folder.name, folder, 200.0, grayscale=True))
    return frames_root, found, misnamed


def _subject_number(value, path: Path, row: int, width: int) -> str:
    try:
        return str(int(float(str(value).strip().lower().removeprefix("sub")))).zfill(width)
    except ValueError:
        raise DatasetError(f"{path}, row {row}: subject {value!r} is not a subject number") from None


def _samm_lv_emotion(cells) -> object:
    """A SAMM-LV row's emotion where its sheet has a column for one (``Estimated Emotion`` or ``Emotion``, as the SAMM
    clip set names it), lower case with ``Other`` as ``others``; else NA (the released sheets carry action units)."""
    for column in ("Estimated Emotion", "Emotion"):
        text = _text(cells.get(column))
        if text:
            return "others" if text.lower() == "other" else text.lower()
    return pd.NA


def _text(value) -> str:
    return "" if is_blank(value) else str(value).strip()


# ---- CASME II -------------------------------------------------------------------------------------

def load_casme2(root, annotations_only: bool = False, frames_dir: str = "CASME2-RAW", name: str = "casme2",
                workbook: str | Path | None = None) -> Dataset:
    """CASME II clips: the 2014 or 2019 coding workbook (the 2019 one has two blank columns)."""
    root = require_root(root)
    rows, videos, repairs = [], {}, []
    book, where, records = workbook_rows(root, CASME2_WORKBOOKS, "CASME II coding workbook",
                                         ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame",
                                          "Estimated Emotion"], repairs=repairs, chosen=workbook)
    parse = FrameParser(where)
    apex_slash = 0
    for i, cells in records:
        subject = _subject_number(cells["Subject"], where, i, width=2)
        clip = str(cells["Filename"]).strip()
        apex = parse(cells["ApexFrame"], i, "ApexFrame", allow=("/",))
        apex_slash += apex is None
        onset, offset = parse(cells["OnsetFrame"], i, "OnsetFrame"), parse(cells["OffsetFrame"], i, "OffsetFrame")
        check_interval(where, i, onset, apex, offset, ("OnsetFrame", "ApexFrame", "OffsetFrame"))
        key = f"sub{subject}/{clip}"
        videos[key] = Video(name, subject, key, root / frames_dir / f"sub{subject}" / clip, 200.0)
        rows.append(dict(dataset=name, subject=subject, video=key, onset=onset, apex=apex, offset=offset, type="micro",
                         emotion=str(cells["Estimated Emotion"]).strip().lower(),
                         action_units=_text(cells.get("Action Units")), fps=200.0, expression=clip, source_row=i))
    if apex_slash:
        repairs.append(f"{apex_slash} rows had apex '/'; apex set to not annotated")
    _note_rounding(parse, repairs)
    return finish(name, root, rows, videos, repairs, "recognition", annotations_only, False, where,
                  frames_root=root / frames_dir, book=book)


# ---- SAMM (micro clips) ---------------------------------------------------------------------------

def load_samm(root, annotations_only: bool = False, frames_dir: str = "SAMM", name: str = "samm",
              workbook: str | Path | None = None) -> Dataset:
    """SAMM micro-movement clips: workbook with one preamble row (or the CSV with 13); grey frames."""
    root = require_root(root)
    rows, videos, repairs = [], {}, []
    book, where, records = workbook_rows(root, SAMM_WORKBOOKS, "SAMM FACS codes workbook",
                                         ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame",
                                          "Estimated Emotion"], repairs=repairs, chosen=workbook)
    parse = FrameParser(where)
    renamed = apex_missing = 0
    for i, cells in records:
        subject = _subject_number(cells["Subject"], where, i, width=3)
        clip = str(cells["Filename"]).strip()
        emotion = str(cells["Estimated Emotion"]).strip().lower()
        if emotion == "other":
            emotion, renamed = "others", renamed + 1
        onset, offset = parse(cells["Onset Frame"], i, "Onset Frame"), parse(cells["Offset Frame"], i, "Offset Frame")
        apex = parse(cells["Apex Frame"], i, "Apex Frame", allow=("/", "-1", None))
        if apex == -1:
            apex = None
        apex_missing += apex is None
        check_interval(where, i, onset, apex, offset, ("Onset Frame", "Apex Frame", "Offset Frame"))
        videos[clip] = Video(name, subject, clip, root / frames_dir / subject / clip, 200.0, grayscale=True)
        rows.append(dict(dataset=name, subject=subject, video=clip, onset=onset, apex=apex, offset=offset, type="micro",
                         emotion=emotion, action_units=_text(cells.get("Action Units")), fps=200.0, expression=clip,
                         source_row=i))
    if renamed:
        repairs.append(f"{renamed} rows had emotion 'Other'; written 'others' as in CASME II")
    if apex_missing:
        repairs.append(f"{apex_missing} rows had apex '/', -1 or empty; apex set to not annotated")
    _note_rounding(parse, repairs)
    return finish(name, root, rows, videos, repairs, "recognition", annotations_only, False, where,
                  frames_root=root / frames_dir, book=book)


# ---- SMIC -----------------------------------------------------------------------------------------

def load_smic(root, variant: str = "HS", annotations_only: bool = False, name: str | None = None) -> Dataset:
    """SMIC clips of one camera (HS, VIS or NIR): ``{variant}/s1/micro/{emotion}/s1_ne_01/image*.bmp``.

    ``root`` may be the folder holding ``HS/ VIS/ NIR/`` or the variant folder itself.
    """
    variant = variant.upper()
    if variant not in SMIC_FPS:
        raise ValueError(f"SMIC variant must be one of {list(SMIC_FPS)}, got {variant!r}")
    name = name or f"smic_{variant.lower()}"
    root = require_root(root)
    base = root / variant if (root / variant).is_dir() else root
    subject_folders = sorted(p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"[sS]\d+", p.name))
    if not subject_folders:
        raise DatasetError(f"{base}: no SMIC subject folders (s1, s2, ...) found for variant {variant}")
    by_subject: dict[str, Path] = {}
    for folder in subject_folders:  # s1, s01 and S1 are one subject: two folders of it would merge unseen
        subject = f"s{int(folder.name[1:])}"
        if subject in by_subject:
            raise DatasetError(f"{by_subject[subject]} and {folder}: both are SMIC subject {subject}; keep one of them")
        by_subject[subject] = folder
    rows, videos, repairs = [], {}, []
    for subject_folder in subject_folders:
        subject = f"s{int(subject_folder.name[1:])}"
        micro = subject_folder / "micro"
        if not micro.is_dir():
            repairs.append(f"{subject_folder}: no micro/ folder; subject {subject} has no clip and is left out")
            continue
        for emotion_folder in sorted(p for p in micro.iterdir() if p.is_dir()):
            for clip_folder in sorted(p for p in emotion_folder.iterdir() if p.is_dir()):
                video = Video(name, subject, clip_folder.name, clip_folder, SMIC_FPS[variant])
                videos[clip_folder.name] = video
                rows.append(dict(dataset=name, subject=subject, video=clip_folder.name, onset=video.first_frame,
                                 apex=None, offset=video.last_frame, type="micro",
                                 emotion=emotion_folder.name.lower(), action_units="", fps=SMIC_FPS[variant],
                                 expression=clip_folder.name, source_row=str(clip_folder)))
    if not rows:
        raise DatasetError(f"{base}: no SMIC clip folder found (expected {variant}/s1/micro/<emotion>/<clip>/ with "
                           f"frame images)")
    return finish(name, root, rows, videos, repairs, "recognition", annotations_only, False, base)


def load_smic_e(root, annotations_only: bool = False, frames_dir: str = "HS_long", name: str = "smic_e",
                workbook: str | Path | None = None) -> Dataset:
    """SMIC-E (HS long clips): ``SMIC-HS-E_annotation.xlsx`` with Subject, Filename, OnsetF, OffsetF,
    Emotion, FirstF. Onsets are made video-relative (``OnsetF - FirstF``) and frames numbered by
    position from 0 (``number - first number``, see :class:`Video`), so both refer to the same frames."""
    root = require_root(root)
    repairs: list[str] = []
    book, where, records = workbook_rows(root, SMIC_E_WORKBOOKS, "SMIC-E annotation workbook",
                                         ["Subject", "Filename", "OnsetF", "OffsetF", "Emotion", "FirstF"],
                                         repairs=repairs, chosen=workbook)
    parse = FrameParser(where)
    rows, videos = [], {}
    for i, cells in records:
        number = int(_subject_number(cells["Subject"], where, i, width=1))
        clip = str(cells["Filename"]).strip()
        first = parse(cells["FirstF"], i, "FirstF")
        onset, offset = parse(cells["OnsetF"], i, "OnsetF"), parse(cells["OffsetF"], i, "OffsetF")
        check_negative(where, i, {"FirstF": first})
        check_interval(where, i, onset, None, offset, ("OnsetF", "ApexF", "OffsetF"))
        if onset < first:
            raise DatasetError(f"{where}, row {i}: OnsetF {onset} is before FirstF {first}, the clip's first frame; "
                               f"correct the row")
        folder = next((root / frames_dir / s / clip for s in (f"s{number:02d}", f"s{number}")
                       if (root / frames_dir / s / clip).is_dir()), root / frames_dir / f"s{number:02d}" / clip)
        videos[clip] = Video(name, f"s{number}", clip, folder, 100.0, numbering="position")
        rows.append(dict(dataset=name, subject=f"s{number}", video=clip, onset=onset - first, apex=None,
                         offset=offset - first, type="micro", emotion=str(cells["Emotion"]).strip().lower(),
                         action_units="", fps=100.0, expression=clip, source_row=i))
    unique_clips(rows, where)
    if rows:
        repairs.append(f"{len(rows)} rows made video-relative by subtracting FirstF")
    _note_rounding(parse, repairs)
    return finish(name, root, rows, videos, repairs, "spotting", annotations_only, False, where,
                  frames_root=root / frames_dir, book=book)


# ---- CDE composite (MEGC 2019) --------------------------------------------------------------------

CDE_CLASSES = ("negative", "positive", "surprise")
CDE_SOURCES = {"casme2": ("casme2", load_casme2), "samm": ("samm", load_samm), "smic": ("smic", load_smic)}


def load_cde(root, component_roots: dict[str, Path] | None = None, annotations_only: bool = False,
             name: str = "cde") -> Dataset:
    """The MEGC 2019 composite: a label file ``dataset,subject,filename,label`` (0 negative,
    1 positive, 2 surprise) over CASME II, SAMM and SMIC-HS.

    ``root`` is the label file or a folder holding one CSV. Component roots default to the
    folders ``casme2``, ``samm`` and ``smic`` beside ``root`` (the synthetic layout); give
    ``component_roots={"casme2": ..., "samm": ..., "smic": ...}`` for real copies. Subjects become
    ``casme2/01``, ``samm/006``, ``smic/s1`` so that LOSO runs over all 68 real subjects.
    """
    root = Path(root).expanduser()
    if root.is_dir():
        candidates = sorted(root.glob("*.csv"))
        if len(candidates) != 1:
            raise DatasetError(f"{root}: expected exactly one CDE label CSV, found {[p.name for p in candidates]}")
        label_file = candidates[0]
    elif root.is_file():
        label_file = root
    else:
        raise DatasetError(f"{root}: CDE label file or folder does not exist")
    try:
        labels = pd.read_csv(label_file, header=None, dtype=str)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{label_file}: the CDE label file is empty; expected lines dataset,subject,filename,label") \
            from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise DatasetError(f"{label_file}: not a readable CDE label CSV ({' '.join(str(error).split())}); expected lines "
                           f"dataset,subject,filename,label") from None
    if str(labels.iloc[0, 0]).strip().lower() == "dataset":
        labels = labels.iloc[1:]
    if labels.shape[1] < 4:
        raise DatasetError(f"{label_file}: expected columns dataset,subject,filename,label")
    if labels.empty:
        raise DatasetError(f"{label_file}: the CDE label file has a header but no label line")
    component_roots = {k: Path(v) for k, v in (component_roots or {}).items()}
    loaded: dict[str, Dataset] = {}
    rows, videos, repairs, first_line = [], {}, [], {}
    lines = list(enumerate((tuple(cells) for cells in labels.iloc[:, :4].itertuples(index=False)), start=2))
    for offset, (source, subject, clip, label) in drop_duplicate_rows(lines, str(label_file), repairs, "line"):
        source = str(source).strip().lower()
        source = "smic" if source.startswith("smic") else source
        if source not in CDE_SOURCES:
            raise DatasetError(f"{label_file}, row {offset}: unknown dataset {source!r}; expected casme2, samm or smic")
        if source not in loaded:
            folder, loader = CDE_SOURCES[source]
            loaded[source] = loader(component_roots.get(source, label_file.parent.parent / folder),
                                    annotations_only=annotations_only)
        component = loaded[source]
        key = str(clip).strip()
        if source == "casme2":
            key = f"sub{_subject_number(subject, label_file, offset, 2)}/{key}"
        match = component.annotations[component.annotations["video"] == key]
        if match.empty:
            raise DatasetError(f"{label_file}, row {offset}: {source} has no clip {clip!r} of subject {subject!r}")
        try:
            emotion = CDE_CLASSES[int(label)]
        except (ValueError, IndexError):
            raise DatasetError(f"{label_file}, row {offset}: label {label!r} is not 0, 1 or 2") from None
        if f"{source}/{key}" in first_line:
            raise DatasetError(f"{label_file}, rows {first_line[f'{source}/{key}']} and {offset}: both label {source} "
                               f"clip {clip!r} of subject {subject!r}, differently; keep the right line")
        first_line[f"{source}/{key}"] = offset
        row = match.iloc[0].to_dict()
        row.update(dataset=name, subject=f"{source}/{row['subject']}", video=f"{source}/{key}", emotion=emotion,
                   source=source, original_emotion=match.iloc[0]["emotion"], source_row=offset)
        rows.append(row)
        if key in component.videos:
            videos[f"{source}/{key}"] = component.videos[key]
    for source, component in loaded.items():
        repairs += [f"{source}: {r}" for r in component.repairs]
    sources = [label_file] + [path for component in loaded.values() for path in component.sources]
    return Dataset(name, label_file, annotation_frame(rows), videos, repairs, "recognition", sources=sources)
