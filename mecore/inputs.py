"""Model inputs streamed from the preprocessing cache: memory bounded by the batch, never by the dataset.

Every neural model reads its per-video inputs (face crops, flows, references) the same way:

* :func:`crop_rows` and :func:`flow_rows` make sure a video's cache entry exists
  (:func:`mecore.preprocess.preprocess_video`, computed chunk by chunk) and return it as :class:`Rows`;
* a model's ``torch.utils.data.Dataset`` keeps only :class:`Rows` and index lists, and each item reads the
  rows of its clip, window or pair with positioned file reads (no memory map, so the pages a long training
  run touches are never charged to the process); :func:`mecore.train.fit` batches the items with a
  ``DataLoader`` (worker processes and pinned memory on CUDA: a :class:`Rows` pickles as its path);
* statistics over a fold's training videos (a flow's standard deviation) are accumulated chunk by chunk
  (:func:`streaming_std`).

So host memory holds a batch and the loader's prefetch whatever the length of the videos; a video of
SAMM-LV (200 fps, minutes long) costs its index list, not its frames.

Shared clip helpers live here too: :func:`clip_starts` (overlapping clips that tile a video, MESNet
Sec. III-D, also BiFPN-I3D's tiling) and :func:`resample_time` (linear resampling of a clip to a fixed
number of frames, MESNet's l_MESNet -> N).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from mecore.data.dataset import Dataset, Video
from mecore.preprocess import CropSpec, preprocess_video


class Rows:
    """Lazy rows of a cache entry (an ``.npy`` file) or of an array, read only when indexed.

    ``rows[i]``, ``rows[a:b]`` and ``rows[[i, j, ...]]`` return new arrays of the stored dtype read with
    ``os.pread``; nothing else of the file is read or kept. ``length`` (default: the stored rows) extends the
    entry with zero rows at its end (a flow to frame t + k has k rows fewer than the video has frames).
    Pickling keeps only the path, so ``DataLoader`` worker processes open the file themselves.
    """

    def __init__(self, source: str | Path | np.ndarray, length: int | None = None):
        self.array = None
        if isinstance(source, np.memmap) and str(source.filename).endswith(".npy"):
            source = Path(source.filename)
        if isinstance(source, np.ndarray):
            self.array, self.path = source, None
            stored, self.row_shape, self.dtype = len(source), source.shape[1:], source.dtype
        else:
            self.path = Path(source)
            with open(self.path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                self.offset = handle.tell()
            if fortran:
                raise ValueError(f"{self.path}: Fortran-ordered entries are not read row by row")
            stored, self.row_shape, self.dtype = shape[0], tuple(shape[1:]), np.dtype(dtype)
        self.stored = stored
        self.length = stored if length is None else int(length)
        if self.length < stored:
            raise ValueError(f"{self.path or 'array'}: length {self.length} is less than the {stored} stored rows")
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd, self._pid = None, None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.length, *self.row_shape)

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start <= i < stop`` (0 <= start <= stop <= length), zeros past the stored rows."""
        out = np.zeros((stop - start, *self.row_shape), self.dtype)
        end = min(stop, self.stored)
        if end > start:
            if self.array is not None:
                out[:end - start] = self.array[start:end]
            else:
                if self._fd is None or self._pid != os.getpid():
                    self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
                count = (end - start) * self.row_bytes
                data = os.pread(self._fd, count, self.offset + start * self.row_bytes)
                if len(data) != count:
                    raise OSError(f"{self.path}: entry is shorter than its header says (rebuild the cache entry)")
                out[:end - start] = np.frombuffer(data, self.dtype).reshape(end - start, *self.row_shape)
        return out

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            if step != 1:
                return self[np.arange(start, stop, step)]
            return self._read(start, max(start, stop))
        if np.isscalar(index):
            position = int(index) + (self.length if int(index) < 0 else 0)
            if not 0 <= position < self.length:
                raise IndexError(f"row {index} of {self.length}")
            return self._read(position, position + 1)[0]
        positions = np.asarray(index, dtype=np.int64)
        positions = np.where(positions < 0, positions + self.length, positions)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.length):
            raise IndexError(f"rows {index} of {self.length}")
        out = np.empty((len(positions), *self.row_shape), self.dtype)
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        breaks = np.flatnonzero(np.diff(ordered) > 1) + 1  # runs of consecutive (or repeated) rows
        for run in np.split(np.arange(len(ordered)), breaks):
            if len(run):
                block = self._read(int(ordered[run[0]]), int(ordered[run[-1]]) + 1)
                out[order[run]] = block[ordered[run] - ordered[run[0]]]
        return out

    def __iter__(self):
        """Row by row, read 256 rows at a time."""
        for block in self.chunks(256):
            yield from block

    def chunks(self, size: int = 1024) -> Iterable[np.ndarray]:
        """All rows, ``size`` at a time."""
        for start in range(0, self.length, size):
            yield self._read(start, min(start + size, self.length))

    def __repr__(self) -> str:
        return f"Rows({self.path or 'array'}, shape={self.shape}, dtype={self.dtype})"


def crop_rows(video: Video, crop: CropSpec) -> Rows:
    """A video's cached face crops (N, S, S[, 3]) uint8 as :class:`Rows`."""
    return Rows(preprocess_video(video, crop, progress=False)["crops"])


def flow_rows(video: Video, crop: CropSpec, step: int, method: str, size: int | None = None,
              channels: str = "xy") -> Rows:
    """A video's cached flow from frame t to t + ``step`` (N, F, F, C) float16 as :class:`Rows` of the video's
    N frames, the last ``step`` rows zero (no frame t + step); ``channels`` "xy" (dx, dy) or "xys" (and strain),
    area-averaged to ``size`` px (:func:`mecore.preprocess.pipeline.area_mean`)."""
    entry = preprocess_video(video, crop, flow_steps=(step,), flow_method=method, flow_channels=channels,
                             flow_size=size, progress=False)[f"flow{step}"]
    return Rows(entry, length=video.n_frames)


def streaming_std(sources: Iterable[Rows | np.ndarray], chunk_bytes: int = 16 << 20) -> float:
    """The standard deviation (with Bessel's correction, as ``torch.Tensor.std``) of every element of
    ``sources`` together, accumulated in float64 over chunks of about ``chunk_bytes``: the data is never in
    memory whole (a fixed row count would hold a gigabyte of 256 px flows)."""
    count, total, squares = 0, 0.0, 0.0
    for source in sources:
        rows = source if isinstance(source, Rows) else Rows(np.asarray(source))
        for block in rows.chunks(max(1, chunk_bytes // (8 * int(np.prod(rows.row_shape, dtype=np.int64))))):
            values = block.astype(np.float64, copy=False)
            count += values.size
            total += float(values.sum())
            squares += float(np.square(values).sum())
    if count < 2:
        raise ValueError("a standard deviation needs at least two values")
    mean = total / count
    return float(np.sqrt(max(squares - count * mean * mean, 0.0) / (count - 1)))


def clip_starts(n_frames: int, length: int, overlap: int) -> list[int]:
    """Starts of clips of ``length`` frames, adjacent clips overlapping by ``overlap`` frames, the last
    clip ending at the last frame (MESNet Sec. III-D: "except the final two clips")."""
    length = min(length, n_frames)
    starts = list(range(0, n_frames - length + 1, length - overlap))
    if starts[-1] != n_frames - length:
        starts.append(n_frames - length)
    return starts


def resample_time(sequence: torch.Tensor, n: int) -> torch.Tensor:
    """Linear interpolation of ``sequence`` (T, ...) to ``n`` steps along time, ends kept (differentiable)."""
    length = sequence.shape[0]
    position = torch.linspace(0, length - 1, n, device=sequence.device)
    low = position.floor().long().clamp(max=length - 1)
    high = (low + 1).clamp(max=length - 1)
    weight = (position - low).view(-1, *([1] * (sequence.dim() - 1))).to(sequence.dtype)
    return sequence[low] * (1 - weight) + sequence[high] * weight


def padded_targets(targets: Sequence[np.ndarray], index: int, width: int) -> torch.Tensor:
    """Item ``index`` of per-clip interval lists as a (width, 2) float32 tensor, NaN-padded (collatable)."""
    out = torch.full((width, 2), float("nan"))
    out[:len(targets[index])] = torch.as_tensor(targets[index], dtype=torch.float32)
    return out


def expression_indices(dataset: Dataset, videos, expression_type: str | None = None) -> pd.DataFrame:
    """The annotation rows of ``videos`` with onset, apex and offset as row indices of the flow tensors."""
    rows = dataset.annotations[dataset.annotations["video"].isin(list(videos))]
    if expression_type is not None:
        rows = rows[rows["type"] == expression_type]
    rows = rows.copy()
    for column in ("onset", "apex", "offset"):
        rows[column] = [np.nan if pd.isna(value) else int(np.searchsorted(dataset.video(video).frame_numbers, value))
                        for video, value in zip(rows["video"], rows[column])]
    return rows.reset_index(drop=True)
