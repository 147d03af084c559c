"""The one data model every dataset is loaded into.

* :class:`Video` — a folder of frames with a frame-number -> file resolver. Frames are read lazily,
  one at a time or in chunks, so a long video is never held in memory whole.
* The annotation table — a pandas DataFrame with the columns of :data:`ANNOTATION_DTYPES`, one row
  per annotated expression (or recognition clip). Frame numbers are inclusive and use the
  dataset's own numbering (the number in the frame file name, or the position for SMIC-E).
* :class:`Dataset` — both together, plus the repairs the loader made to the raw annotations.

A video can be read at every k-th frame (:meth:`Video.every`, :meth:`Dataset.at_most_fps`): frame
numbers stay the dataset's own, so annotations and predicted intervals need no conversion.

Frames are checked, never trusted (issue 20): a frame folder's numbering must be unambiguous (a file
without a number among numbered ones, or two files of one number, is an error naming them); a frame
file cut short (a JPEG without its end-of-image marker, a PNG without IEND, a BMP shorter than its
header says), one that does not decode, or one whose size differs from the video's first frame is an
error naming the file. :meth:`Video.verify_files` checks every frame's header and end without
decoding (``python -m mecore data check`` runs it); gaps in the numbering are listed by
:attr:`Video.gaps` and printed by ``data check``.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd

ANNOTATION_DTYPES = {
    "dataset": "string",
    "subject": "string",
    "video": "string",
    "onset": "Int64",
    "apex": "Int64",  # <NA> where the dataset gives none (SMIC, SAMM-LV apex -1, CAS(ME)^2 apex 0)
    "offset": "Int64",
    "type": "string",  # "micro" or "macro"
    "emotion": "string",  # lower case, as the dataset names it ("others" for CAS(ME)^2 others)
    "action_units": "string",
    "fps": "float64",
}
EXPRESSION_TYPES = ("micro", "macro")

FRAME_NUMBER = re.compile(r"(\d+)$")  # a frame file name's trailing digits
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def dataset_family(name: str) -> str:
    """The real dataset a name stands for: ``synth_samm_lv`` -> ``samm_lv``."""
    return name.removeprefix("synth_")


class DatasetError(ValueError):
    """Bad input: names the file (and row) and says what is wrong."""


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def positive_fps(fps, what: str) -> float:
    """``fps`` as a float, or a DatasetError naming ``what`` when it is not a positive, finite frame rate."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DatasetError(f"{what}: frame rate must be a positive number of frames per second, got {fps!r}")
    return value


def _cut_short(head: bytes, tail: bytes, size: int) -> str | None:
    """What is wrong with an image file whose first and last bytes are ``head`` and ``tail``, or None: the
    cheap test for a frame cut short (libjpeg only warns, without a file name, and decodes grey)."""
    if size == 0:
        return "empty file (0 bytes)"
    if head[:2] == b"\xff\xd8" and not tail.rstrip(b"\x00\r\n").endswith(b"\xff\xd9"):
        return "truncated JPEG: it does not end with the end-of-image marker FFD9"
    if head[:8] == PNG_SIGNATURE and b"IEND" not in tail[-12:]:
        return "truncated PNG: it does not end with the IEND chunk"
    if head[:2] == b"BM" and len(head) >= 6 and size < int.from_bytes(head[2:6], "little"):
        return f"truncated BMP: {size} bytes, its header says {int.from_bytes(head[2:6], 'little')}"
    return None


def _jpeg_size(file) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame marker, walking the segment headers only."""
    try:
        file.seek(2)
        while True:
            mark = file.read(2)
            if len(mark) < 2 or mark[0] != 0xFF:
                return None
            marker = mark[1]
            while marker == 0xFF:
                marker = file.read(1)[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:
                continue
            if marker in (0xD9, 0xDA):
                return None
            length = int.from_bytes(file.read(2), "big")
            if length < 2:
                return None
            if marker in JPEG_SOF:
                segment = file.read(5)
                return int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            file.seek(length - 2, 1)
    except (IndexError, OSError):
        return None


def probe_image(path: Path) -> tuple[int, int] | None:
    """(height, width) of a frame file from its header (JPEG, PNG, BMP; None for other formats), reading its
    first and last bytes only. Raises DatasetError naming the file when it is cut short."""
    try:
        with open(path, "rb") as file:
            head = file.read(32)
            size = file.seek(0, 2)
            file.seek(max(0, size - 64))
            problem = _cut_short(head, file.read(), size)
            if problem:
                raise DatasetError(f"{path}: {problem}; copy or extract this frame again")
            if head[:2] == b"\xff\xd8":
                return _jpeg_size(file)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the frame ({error.strerror or error})") from None
    if head[:8] == PNG_SIGNATURE and len(head) >= 24:
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head[:2] == b"BM" and len(head) >= 26:
        if int.from_bytes(head[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sizes
            return int.from_bytes(head[20:22], "little"), int.from_bytes(head[18:20], "little")
        return abs(int.from_bytes(head[22:26], "little", signed=True)), int.from_bytes(head[18:22], "little", signed=True)
    return None


def read_image(path: Path, grayscale: bool = False) -> np.ndarray:
    """A frame file decoded by OpenCV (BGR, or grey), after the cut-short test; DatasetError naming the file
    when it is cut short or does not decode."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the frame ({error.strerror or error})") from None
    problem = _cut_short(data[:32], data[-64:], len(data))
    if problem:
        raise DatasetError(f"{path}: {problem}; copy or extract this frame again")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable image (OpenCV cannot decode it); copy or extract this frame again")
    return image


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]} pixels"


def annotation_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Build a typed annotation table from row dicts (extra columns are kept after the typed ones)."""
    frame = pd.DataFrame(rows)
    for column, dtype in ANNOTATION_DTYPES.items():
        if column not in frame:
            frame[column] = pd.Series([None] * len(frame), index=frame.index, dtype=dtype)
        frame[column] = frame[column].astype(dtype)
    extra = [c for c in frame.columns if c not in ANNOTATION_DTYPES]
    frame = frame[list(ANNOTATION_DTYPES) + extra]
    bad = frame[~frame["type"].isin(EXPRESSION_TYPES)]
    if len(bad):
        raise DatasetError(f"expression type must be micro or macro, got {bad['type'].iloc[0]!r}")
    return frame.reset_index(drop=True)


@dataclass
class Video:
    """One video (or recognition clip): a folder of frame images.

    ``numbering="name"`` takes a frame's number from the trailing digits of its file name
    (``img001.jpg`` is frame 1; ``006_05562.jpg`` is frame 5562); a file without a number, or two files
    of one number (``img1.jpg`` and ``img001.jpg``), is an error naming them.
    ``numbering="position"`` numbers the frames 0, 1, 2, ... from the first (SMIC-E, where the workbook's
    frame numbers are made video-relative): numbered files by ``number - first number`` (so a missing
    file leaves a gap rather than shifting every later frame), a folder of unnumbered files by their
    sorted names; numbered and unnumbered files mixed is an error. ``frame_step`` > 1 keeps every
    ``frame_step``-th file of the folder (``fps`` is then the rate of the kept frames). ``fps`` must be
    positive (DatasetError otherwise).
    """

    dataset: str
    subject: str
    name: str
    folder: Path
    fps: float
    numbering: str = "name"
    grayscale: bool = False
    extra: dict = field(default_factory=dict)
    frame_step: int = 1
    max_frames: int | None = None  # keep only the first max_frames (kept) frames: a short trial of a long video
    _first_read: tuple | None = field(default=None, init=False, repr=False, compare=False)  # (path, shape) read first

    def __post_init__(self):
        self.fps = positive_fps(self.fps, f"{self.folder}: video {self.name!r}")
        if self.numbering not in ("name", "position"):
            raise ValueError(f"numbering must be 'name' or 'position', got {self.numbering!r}")

    @cached_property
    def all_frames(self) -> dict[int, Path]:
        """Every frame of the folder, number -> file, in frame order (before ``frame_step`` and ``max_frames``).
        Raises DatasetError if the folder is absent or empty, or its numbering is ambiguous."""
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: frame folder of video {self.name!r} does not exist")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{self.folder}: no frame images in the folder of video {self.name!r}")
        matches = [FRAME_NUMBER.search(path.stem) for path in files]
        unnumbered = [path for path, match in zip(files, matches) if match is None]
        if self.numbering == "position" and len(unnumbered) == len(files):
            return dict(enumerate(files))  # no file carries a number: the sorted names give the order
        if unnumbered:
            raise DatasetError(
                f"{unnumbered[0]}: frame file name has no frame number ({len(unnumbered)} of the {len(files)} images "
                f"in the folder of video {self.name!r} have none); move it out of the frame folder or rename it "
                f"with its frame number")
        numbered: dict[int, Path] = {}
        for path, match in zip(files, matches):
            number = int(match.group(1))
            if number in numbered:
                raise DatasetError(f"{numbered[number]} and {path}: both are frame {number} of video {self.name!r}; "
                                   f"keep one of them")
            numbered[number] = path
        ordered = sorted(numbered.items())
        if self.numbering == "position":
            first = ordered[0][0]
            return {number - first: path for number, path in ordered}
        return dict(ordered)

    @cached_property
    def frame_files(self) -> dict[int, Path]:
        """Frame number -> file of the kept frames (every ``frame_step``-th, at most ``max_frames``), in order."""
        return dict(list(self.all_frames.items())[::self.frame_step][:self.max_frames])

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """Runs of frame numbers missing inside the folder's numbering, ``(first missing, last missing)``."""
        numbers = np.fromiter(self.all_frames, dtype=np.int64)
        jumps = np.flatnonzero(np.diff(numbers) > 1)
        return [(int(numbers[i]) + 1, int(numbers[i + 1]) - 1) for i in jumps]

    def verify_files(self) -> None:
        """Check every frame file of the folder without decoding it (JPEG, PNG, BMP headers; other formats are
        decoded): none cut short, all of one size. Raises DatasetError naming the first bad file."""
        sizes = {}
        for path in self.all_frames.values():
            sizes[path] = probe_image(path) or read_image(path, self.grayscale).shape[:2]
        counted = Counter(sizes.values())
        if len(counted) > 1:
            usual, count = counted.most_common(1)[0]
            odd = next(path for path, size in sizes.items() if size != usual)
            raise DatasetError(f"{odd}: frame is {_size_text(sizes[odd])}, but {count} of the {len(sizes)} frames of "
                               f"video {self.name!r} are {_size_text(usual)}; a video's frames must all have one size: "
                               f"extract this frame again or remove it")

    def every(self, step: int) -> Video:
        """This video read at every ``step``-th frame: same frame numbers, ``fps / step``."""
        if step < 1:
            raise ValueError(f"frame step must be >= 1, got {step}")
        return self if step == 1 else replace(self, fps=self.fps / step, frame_step=self.frame_step * step)

    def first(self, n: int) -> Video:
        """This video cut to its first ``n`` frames (a trial run on a few seconds of a long video); the video
        itself when it has no more."""
        if n < 1:
            raise ValueError(f"a video needs at least one frame, got {n}")
        if n >= self.n_frames:
            return self  # the whole video: it keeps its own cache entries
        return replace(self, max_frames=n if self.max_frames is None else min(n, self.max_frames))

    @property
    def first_frame(self) -> int:
        return next(iter(self.frame_files))

    @property
    def last_frame(self) -> int:
        return next(reversed(self.frame_files))

    @property
    def n_frames(self) -> int:
        return len(self.frame_files)

    @property
    def frame_numbers(self) -> np.ndarray:
        return np.fromiter(self.frame_files, dtype=np.int64)

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    def frame_path(self, number: int) -> Path:
        try:
            return self.frame_files[int(number)]
        except KeyError:
            raise DatasetError(
                f"{self.folder}: video {self.name!r} has no frame {number} "
                f"(frames {self.first_frame}..{self.last_frame})"
            ) from None

    def frame(self, number: int) -> np.ndarray:
        """One frame as uint8, BGR (H, W, 3) or, for grey datasets, (H, W)."""
        path = self.frame_path(number)
        image = read_image(path, self.grayscale)
        if self._first_read is None:
            self._first_read = (path, image.shape[:2])
        elif image.shape[:2] != self._first_read[1]:
            first, size = self._first_read
            raise DatasetError(f"{path}: frame is {_size_text(image.shape[:2])}, but frame {first.name} of video "
                               f"{self.name!r} is {_size_text(size)}; a video's frames must all have one size: "
                               f"extract this frame again or remove it (python -m mecore data check lists the odd one)")
        return image

    def iter_frames(self, start: int | None = None, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_number, image)`` for frames ``start..stop`` inclusive, reading one at a time."""
        lo = self.first_frame if start is None else start
        hi = self.last_frame if stop is None else stop
        for number in self.frame_files:
            if lo <= number <= hi:
                yield number, self.frame(number)

    def iter_chunks(self, chunk: int = 256, start: int | None = None, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(frame_numbers, frames)`` arrays of at most ``chunk`` frames: bounded memory."""
        numbers, images = [], []
        for number, image in self.iter_frames(start, stop):
            numbers.append(number)
            images.append(image)
            if len(images) == chunk:
                yield np.asarray(numbers), np.stack(images)
                numbers, images = [], []
        if images:
            yield np.asarray(numbers), np.stack(images)

    def frames(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Frames ``start..stop`` inclusive stacked in memory: for clips and short ranges only."""
        return np.stack([image for _, image in self.iter_frames(start, stop)])


@dataclass
class Dataset:
    """A loaded dataset: the annotation table, its videos, and what the loader repaired or skipped."""

    name: str
    root: Path
    annotations: pd.DataFrame
    videos: dict[str, Video]
    repairs: list[str] = field(default_factory=list)
    kind: str = "spotting"  # "spotting" (long videos) or "recognition" (clips)
    spot_videos: dict[str, Video] = field(default_factory=dict)  # unannotated videos to predict (mecore.spot)
    sources: list[Path] = field(default_factory=list)  # the annotation files read (the workbook, the label file)

    @property
    def subjects(self) -> list[str]:
        """Subjects of the annotations and, for long videos, of videos with no expression at all
        (their false positives count in spotting; real SAMM-LV has two such subjects)."""
        subjects = set(self.annotations["subject"].unique().tolist())
        if self.kind == "spotting":
            subjects |= {video.subject for video in self.videos.values()}
        return sorted(subjects)

    def video(self, name: str) -> Video:
        try:
            return self.videos[name] if name in self.videos else self.spot_videos[name]
        except KeyError:
            raise DatasetError(f"{self.root}: dataset {self.name!r} has no video {name!r}") from None

    def at_most_fps(self, max_fps: float | None) -> Dataset:
        """A view whose videos faster than ``max_fps`` are read at every ``round(fps / max_fps)``-th frame
        (200 fps SAMM-LV at 30 -> every 7th frame, 28.6 fps); ``None`` or a slower dataset: ``self``."""
        if max_fps is None:
            return self
        max_fps = positive_fps(max_fps, f"dataset {self.name!r}: max_fps")
        videos, spot = ({name: video.every(max(1, round(video.fps / max_fps))) for name, video in group.items()}
                        for group in (self.videos, self.spot_videos))
        if all(videos[name] is video for name, video in self.videos.items()) and \
                all(spot[name] is video for name, video in self.spot_videos.items()):
            return self
        return replace(self, videos=videos, spot_videos=spot)

    def verify_frames(self) -> None:
        """:meth:`Video.verify_files` for every video: DatasetError naming the first bad frame file."""
        for video in list(self.videos.values()) + list(self.spot_videos.values()):
            video.verify_files()

    def intervals(self, video: str, expression_type: str | None = None) -> pd.DataFrame:
        """The annotated intervals of one video, optionally of one type."""
        rows = self.annotations[self.annotations["video"] == video]
        if expression_type is not None:
            rows = rows[rows["type"] == expression_type]
        return rows

    def __repr__(self) -> str:
        counts = self.annotations["type"].value_counts().to_dict()
        return (f"Dataset({self.name!r}, root={str(self.root)!r}, subjects={len(self.subjects)}, "
                f"videos={len(self.videos)}, expressions={counts})")
