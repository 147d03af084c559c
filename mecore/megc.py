"""The MEGC challenges' result files: per-video spotting files and the submission CSVs, read and written.

Three layouts, each as the challenge's own code writes or reads it:

* **Per-video spotting files** (MEGC 2020 baseline, He et al. 2020; HeyingGithub/Baseline-project-for-
  MEGC2020_spotting: ``MDMD_results/MDMDmat_to_txt.m`` writes them, ``result_helper.py`` ``txt_to_clips``
  reads them). One text file per video, ``<folder>/<video>.txt`` (``s15_0101.txt``, ``006_1.txt``), one
  spotted interval per line: ``onset offset score``, written with single spaces (read split on any
  whitespace, as the baseline reads; a blank line is an error, as it crashes the baseline's reader),
  onset and offset integers, score a float (the baseline writes ``1.0``: its MDMD spotter has no
  confidence). The frame numbers are the video's own, those of the annotation workbooks (the baseline
  counts the first frame as 1). One folder per expression type (the baseline has
  ``<dataset>_micro_txtClips/`` and ``_macro_txtClips/``). An empty file is a video where nothing was
  spotted; the baseline skips a video whose file is missing, which drops its ground truth from the
  counts, so a video of ``videos`` without a file is an error here.
* **Spotting submission CSV** (MEGC 2022 and 2023, the unseen CAS(ME)^3 and SAMM Challenge test sets): one
  file per test set, ``cas_pred.csv`` and ``samm_pred.csv``, header ``vid,pred_onset,pred_offset,type``,
  type ``me`` (micro) or ``mae`` (macro); as the MEGC 2022 winner's code writes it
  (genbing99/MTSN-Spot-ME-MaE, ``test_model.py`` and its ``cas_pred.csv``). A MEGC 2023 entry
  (qin123xyz/MEGC2023_macro-and-micro-expression-spotting) heads its columns ``vid,onset,offset,type``:
  both headers are read, the first is written.
* **Spot-then-recognise (STR) submission CSV** (MEGC 2024 and 2025): header
  ``subject,video,onset,offset,emotion``, the columns the official scorer reads (genbing99/STRS-Metric,
  ``strs_metric.py``, ``data/pred.csv``; a MEGC 2024 entry, hitheyuhong/MEGC2024-CODE, writes its
  ``cas_pred.csv`` and ``samm_pred.csv`` so). Emotion is an STR label (:data:`mecore.metrics.STR_LABELS`:
  negative, positive, surprise, or others, which the analysis leaves out).

Frame numbers are written and read unchanged: their base must be that of the ground truth that scores
them (MEAN, the STRS authors' network, subtracts 1 from the workbooks' frames, ``load_label.py``). The
official scorer takes the intervals of a video in file order, so order is kept both ways. Readers return
a DataFrame with ``video``, ``onset``, ``offset``, ``score`` (NaN where the layout has none), plus ``type``
(``micro``/``macro``, the rest of mecore's words) for spotting and ``subject``, ``emotion`` for STR. A CSV
may carry an extra ``score`` column (``include_score=True``); the challenges' layouts have none.

Writes are atomic (a temporary file in the same folder, then ``os.replace``): a failed write leaves the
old file or none, never half of one. Every row is checked before the first file is written. A malformed
line, an unknown type or emotion label, a video not in ``videos`` is a :class:`MEGCFormatError` naming the
file, the line (or row) and the value.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mecore.metrics import STR_LABELS, _listing
from mecore.paths import write_atomically

SPOTTING_CSV_COLUMNS = ["vid", "pred_onset", "pred_offset", "type"]
SPOTTING_CSV_ALT_COLUMNS = ["vid", "onset", "offset", "type"]  # the MEGC 2023 entry's header
STR_CSV_COLUMNS = ["subject", "video", "onset", "offset", "emotion"]
TYPE_CODES = {"micro": "me", "macro": "mae"}
TASKS = ("spotting", "str")


class MEGCFormatError(ValueError):
    """A MEGC result file, or a table to be written as one, that does not fit its layout."""


# ------------------------------------------------------------------------- per-video spotting files
def write_spotting_files(intervals: pd.DataFrame, folder, videos=None) -> list[Path]:
    """Write ``<folder>/<video>.txt`` per video, lines ``onset offset score`` (MEGC 2020 baseline).

    ``intervals``: columns ``video``, ``onset``, ``offset`` (integer frames), optional ``score`` (1.0
    when absent, as the baseline writes) and ``type`` (one type per folder: several is an error).
    ``videos``: every video of the set; each gets a file, an empty one where nothing was spotted, and an
    interval in another video is an error. Returns the files written, in video order.
    """
    table = _check_intervals(intervals, "interval", need=("video", "onset", "offset"))
    if "type" in table and table["type"].nunique(dropna=False) > 1:
        raise MEGCFormatError(f"intervals of several types ({_listing(sorted(map(str, table['type'].unique())))}); "
                              f"the per-video files hold one type: write each type to its own folder")
    names = _video_names(table["video"], "interval")
    if videos is not None:
        wanted = [str(v) for v in videos]
        _check_known(names, set(wanted), "interval", table)
    else:
        wanted = list(dict.fromkeys(names))
    for name in wanted:
        _check_file_stem(name)
    scores = _scores(table, "interval", default=1.0)
    lines: dict[str, list[str]] = {name: [] for name in wanted}
    for name, onset, offset, score in zip(names, table["onset"], table["offset"], scores):
        lines[name].append(f"{onset} {offset} {score!r}\n")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in wanted:
        path = folder / f"{name}.txt"
        write_atomically(path, "".join(lines[name]).encode("utf-8"))
        written.append(path)
    return written


def read_spotting_files(folder, videos=None, type: str | None = None) -> pd.DataFrame:
    """The intervals of every ``<video>.txt`` in ``folder`` (MEGC 2020 baseline layout), in file order.

    ``videos``: the expected videos; a file of another video, or a video without a file, is an error.
    ``type``: written into a ``type`` column (``micro``/``macro``) when given, as the files do not say.
    Each line must be ``onset offset score``: integers, a finite float, offset >= onset; else the error
    names the file, the line number and the line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of per-video spotting files")
    if type is not None and type not in TYPE_CODES:
        raise ValueError(f"type must be 'micro' or 'macro', got {type!r}")
    files = sorted(p for p in folder.glob("*.txt") if not p.name.startswith(".") and p.is_file())
    found = [p.stem for p in files]
    if videos is not None:
        wanted = {str(v) for v in videos}
        strays = [p for p in files if p.stem not in wanted]
        if strays:
            raise MEGCFormatError(f"{strays[0]}: video {strays[0].stem!r} is not one of the videos given "
                                  f"({len(strays)} such file(s): {_listing([p.name for p in strays])})")
        missing = sorted(wanted - set(found))
        if missing:
            raise MEGCFormatError(f"{folder}: no file for video(s) {_listing(missing)}; a video where nothing "
                                  f"was spotted needs an empty <video>.txt")
    rows = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()  # as the baseline's reader: any whitespace
            if len(fields) != 3:
                raise MEGCFormatError(f"{path}, line {number}: {line!r} is not 'onset offset score' (three "
                                      f"fields separated by spaces)")
            onset = _integer(fields[0], f"{path}, line {number}: onset")
            offset = _integer(fields[1], f"{path}, line {number}: offset")
            score = _finite(fields[2], f"{path}, line {number}: score")
            if offset < onset:
                raise MEGCFormatError(f"{path}, line {number}: offset {offset} is before onset {onset}")
            rows.append((path.stem, onset, offset, score))
    out = pd.DataFrame(rows, columns=["video", "onset", "offset", "score"])
    out = out.astype({"video": object, "onset": np.int64, "offset": np.int64, "score": float})
    if type is not None:
        out["type"] = type
    return out


# ---------------------------------------------------------------------------- submission CSVs
def write_submission_csv(intervals: pd.DataFrame, path, task: str = "spotting", videos=None,
                         include_score: bool = False) -> Path:
    """Write a challenge submission CSV: ``task="spotting"`` (``vid,pred_onset,pred_offset,type``, MEGC
    2022/2023) or ``"str"`` (``subject,video,onset,offset,emotion``, MEGC 2024/2025).

    ``intervals``: ``video``, ``onset``, ``offset`` (integer frames) and, for spotting, ``type``
    (``micro``/``macro``, or ``me``/``mae``), for STR ``subject`` and ``emotion`` (an STR label). Rows are
    written in the given order. ``videos``: the set's video names; another video is an error.
    ``include_score``: add a ``score`` column (not in the challenges' layouts).
    """
    _check_task(task)
    need = ("video", "onset", "offset", "type") if task == "spotting" else ("subject", "video", "onset", "offset",
                                                                            "emotion")
    table = _check_intervals(intervals, "interval", need=need)
    names = _video_names(table["video"], "interval")
    if videos is not None:
        _check_known(names, {str(v) for v in videos}, "interval", table)
    columns = list(SPOTTING_CSV_COLUMNS if task == "spotting" else STR_CSV_COLUMNS)
    if task == "spotting":
        codes = {**TYPE_CODES, **{code: code for code in TYPE_CODES.values()}}
        labels = []
        for position, value in enumerate(table["type"]):
            if not isinstance(value, str) or value not in codes:
                raise MEGCFormatError(f"interval {_where(table, position)}: type {value!r} is not micro, macro, me "
                                      f"or mae")
            labels.append(codes[value])
        body = [[n, on, off, t] for n, on, off, t in zip(names, table["onset"], table["offset"], labels)]
    else:
        subjects = table["subject"].tolist()
        for position, (subject, label) in enumerate(zip(subjects, table["emotion"])):
            if not isinstance(label, str) or label not in STR_LABELS:
                raise MEGCFormatError(f"interval {_where(table, position)}: emotion {label!r} is not an STR label "
                                      f"({_listing(list(STR_LABELS))}); map it with mecore.metrics.str_emotion")
            if subject is None or (not isinstance(subject, str) and pd.isna(subject)) or str(subject) == "":
                raise MEGCFormatError(f"interval {_where(table, position)}: no subject")
        body = [[str(s), n, on, off, e] for s, n, on, off, e in
                zip(subjects, names, table["onset"], table["offset"], table["emotion"])]
    if include_score:
        columns.append("score")
        body = [row + [repr(score)] for row, score in zip(body, _scores(table, "interval", default=None))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(body)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue().encode("utf-8"))
    return path


def read_submission_csv(path, videos=None, task: str = "spotting") -> pd.DataFrame:
    """Read a challenge submission CSV (layouts in the module docstring), rows in file order.

    Spotting: ``video``, ``onset``, ``offset``, ``score``, ``type`` (``me`` -> ``micro``, ``mae`` ->
    ``macro``). STR: ``subject``, ``video``, ``onset``, ``offset``, ``score``, ``emotion``. ``score`` is
    NaN unless the file has a score column. Blank lines are skipped (pandas, which the scorer reads with,
    skips them too); any other malformed row, an unknown type or emotion, or a video not in ``videos`` is
    an error naming the file, the line and the value.
    """
    _check_task(task)
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:  # one MEGC 2022 entry writes a BOM
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise MEGCFormatError(f"{path}: empty file; expected a header line")
        header = [name.strip() for name in header]
        layouts = ([SPOTTING_CSV_COLUMNS, SPOTTING_CSV_ALT_COLUMNS] if task == "spotting" else [STR_CSV_COLUMNS])
        layout = next((cols for cols in layouts if header in (cols, [*cols, "score"])), None)
        if layout is None:
            raise MEGCFormatError(f"{path}, line 1: header {','.join(header)!r} is not "
                                  f"{' or '.join(repr(','.join(cols)) for cols in layouts)} (optionally + ',score')")
        wanted = None if videos is None else {str(v) for v in videos}
        rows = []
        for fields in reader:
            number = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise MEGCFormatError(f"{path}, line {number}: {len(fields)} fields, expected {len(header)} "
                                      f"({','.join(header)})")
            record = dict(zip(header, (f.strip() for f in fields)))
            video = record[layout[0] if task == "spotting" else "video"]
            if not video:
                raise MEGCFormatError(f"{path}, line {number}: no video name")
            if wanted is not None and video not in wanted:
                raise MEGCFormatError(f"{path}, line {number}: video {video!r} is not one of the videos given")
            onset = _integer(record[layout[1] if task == "spotting" else "onset"], f"{path}, line {number}: onset")
            offset = _integer(record[layout[2] if task == "spotting" else "offset"], f"{path}, line {number}: offset")
            if offset < onset:
                raise MEGCFormatError(f"{path}, line {number}: offset {offset} is before onset {onset}")
            score = _finite(record["score"], f"{path}, line {number}: score") if "score" in record else math.nan
            if task == "spotting":
                code = record["type"]
                kinds = {c: t for t, c in TYPE_CODES.items()}
                if code not in kinds:
                    raise MEGCFormatError(f"{path}, line {number}: type {code!r} is not 'me' (micro) or 'mae' (macro)")
                rows.append((video, onset, offset, score, kinds[code]))
            else:
                if record["emotion"] not in STR_LABELS:
                    raise MEGCFormatError(f"{path}, line {number}: emotion {record['emotion']!r} is not an STR label "
                                          f"({_listing(list(STR_LABELS))})")
                if not record["subject"]:
                    raise MEGCFormatError(f"{path}, line {number}: no subject")
                rows.append((record["subject"], video, onset, offset, score, record["emotion"]))
    columns = (["video", "onset", "offset", "score", "type"] if task == "spotting"
               else ["subject", "video", "onset", "offset", "score", "emotion"])
    out = pd.DataFrame(rows, columns=columns)
    return out.astype({"video": object, "onset": np.int64, "offset": np.int64, "score": float})


# ------------------------------------------------------------------------------------ helpers
def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _check_intervals(intervals: pd.DataFrame, what: str, need: tuple) -> pd.DataFrame:
    """The table with integer ``onset``/``offset``; missing columns, a missing or fractional bound, or
    offset < onset is an error naming the row."""
    if not isinstance(intervals, pd.DataFrame):
        raise MEGCFormatError(f"intervals must be a DataFrame, got {type(intervals).__name__}")
    missing = [c for c in need if c not in intervals]
    if missing:
        raise MEGCFormatError(f"intervals have no {', '.join(repr(c) for c in missing)} column (columns: "
                              f"{list(intervals.columns)})")
    table = intervals.copy()
    for column in ("onset", "offset"):
        numbers = pd.to_numeric(table[column], errors="coerce").astype("float64").to_numpy()
        bad = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
        if bad.size:
            raise MEGCFormatError(f"{what} {_where(table, bad[0])}: {column} {_shown(table[column].iloc[bad[0]])} is "
                                  f"not a whole frame number")
        table[column] = numbers.astype(np.int64)
    backwards = np.flatnonzero(table["offset"].to_numpy() < table["onset"].to_numpy())
    if backwards.size:
        i = backwards[0]
        raise MEGCFormatError(f"{what} {_where(table, i)}: offset {table['offset'].iloc[i]} is before onset "
                              f"{table['onset'].iloc[i]}")
    return table


def _video_names(column: pd.Series, what: str) -> list[str]:
    names = []
    for position, value in enumerate(column):
        if value is None or (not isinstance(value, str) and pd.isna(value)) or str(value) == "":
            raise MEGCFormatError(f"{what} row {column.index[position]!r}: no video name")
        names.append(str(value))
    return names


def _check_known(names: list[str], known: set, what: str, table: pd.DataFrame) -> None:
    for position, name in enumerate(names):
        if name not in known:
            raise MEGCFormatError(f"{what} {_where(table, position)}: video {name!r} is not one of the videos given")


def _check_file_stem(name: str) -> None:
    if name in ("", ".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise MEGCFormatError(f"video name {name!r} cannot be a file name")


def _scores(table: pd.DataFrame, what: str, default) -> list[float]:
    if "score" not in table:
        if default is None:
            raise MEGCFormatError(f"intervals have no 'score' column (include_score=True needs one)")
        return [float(default)] * len(table)
    numbers = pd.to_numeric(table["score"], errors="coerce").astype("float64").to_numpy()
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        raise MEGCFormatError(f"{what} {_where(table, bad[0])}: score {_shown(table['score'].iloc[bad[0]])} is not "
                              f"a finite number")
    return [float(x) for x in numbers]


def _integer(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number == round(number):
        return int(number)
    raise MEGCFormatError(f"{where} {text!r} is not a whole frame number")


def _finite(text: str, where: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise MEGCFormatError(f"{where} {text!r} is not a finite number")
    return number


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _where(table: pd.DataFrame, position: int) -> str:
    video = f", video {table['video'].iloc[position]!r}" if "video" in table else ""
    return f"row {table.index[position]!r}{video}"
