"""The one data model every dataset is loaded into.

* :class:`Video` — a folder of frames with a frame-number -> file resolver. Frames are read lazily,
  one at a time or in chunks, so a long video is never held in memory whole.
* The annotation table — a pandas DataFrame with the columns of :data:`ANNOTATION_DTYPES`, one row
  per annotated expression (or recognition clip). Frame numbers are inclusive and use the
  dataset's own numbering (the number in the frame file name, or the position for SMIC-E).
* :class:`Dataset` — both together, plus the repairs the loader made to the raw annotations.

A video can be read at every k-th frame (:meth:`Video.every`, :meth:`Dataset.at_most_fps`): frame
numbers stay the dataset's own, so annotations and predicted intervals need no conversion.
"""
from __future__ import annotations

import re
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
    (``img001.jpg`` and ``img1.jpg`` are both frame 1; ``006_05562.jpg`` is frame 5562);
    ``numbering="position"`` numbers the sorted files 0, 1, 2, ... (SMIC-E, where the workbook's
    frame numbers are made video-relative). ``frame_step`` > 1 keeps every ``frame_step``-th file of
    the folder (``fps`` is then the rate of the kept frames).
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

    @cached_property
    def frame_files(self) -> dict[int, Path]:
        """Frame number -> file, in frame order. Raises DatasetError if the folder is absent or empty."""
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: frame folder of video {self.name!r} does not exist")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{self.folder}: no frame images in the folder of video {self.name!r}")
        if self.numbering == "position":
            return dict(list(enumerate(files))[::self.frame_step][:self.max_frames])
        numbered = {}
        for path in files:
            match = FRAME_NUMBER.search(path.stem)
            if match is None:
                raise DatasetError(f"{path}: frame file name has no frame number")
            numbered[int(match.group(1))] = path
        return dict(sorted(numbered.items())[::self.frame_step][:self.max_frames])

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
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if self.grayscale else cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{path}: not a readable image")
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
        videos, spot = ({name: video.every(max(1, round(video.fps / max_fps))) for name, video in group.items()}
                        for group in (self.videos, self.spot_videos))
        if all(videos[name] is video for name, video in self.videos.items()) and \
                all(spot[name] is video for name, video in self.spot_videos.items()):
            return self
        return replace(self, videos=videos, spot_videos=spot)

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
