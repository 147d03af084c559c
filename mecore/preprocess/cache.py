"""On-disk cache of per-video arrays (face crops, LCN faces, flows): written atomically, read memory-mapped.

An entry is ``<root>/<dataset>/<video>-<folder hash>/<kind>-<digest>.npy`` plus a ``.json`` sidecar. The digest hashes every
parameter that changes the result, so entries for different settings live side by side. The sidecar records
the parameters, a fingerprint of the source frames (file names, sizes, modification times), the OpenCV and
cache-format versions, the array's shape and dtype, the file size and a CRC-32 of the file. An entry is used
only when all of these match; otherwise it is reported (logged) and rebuilt. Arrays are streamed to a
temporary file in the same folder, then renamed over the entry, then the sidecar is renamed into place: a
crash leaves either the old valid entry, or an ``.npy`` without a matching sidecar, which is rebuilt.

Temporary files are named ``.<name>.<pid>.tmp`` (here, in LOSO results and checkpoints, in ``mecore spot``'s
decoded frames). One left by a process killed with ``kill -9`` or stopped by a full disk is *stale* when its
owner pid no longer runs on this machine and it has not been written to for :data:`STALE_AFTER_S` seconds (a
temporary file of a process on another machine sharing the folder is still growing); :func:`remove_stale`
deletes such files, and the writers call it on their folder before writing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from mecore.data.dataset import Video

CACHE_FORMAT = 1
STALE_AFTER_S = 60.0
TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp
_READ_BLOCK = 1 << 24
log = logging.getLogger(__name__)
USED: dict[str, dict] = {}
"""Every entry this process opened or wrote, by path: kind, parameters, bytes and rows (``mecore plan`` sizes a
dataset's cache from the entries a trial used); one record per entry, however often it is opened."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts as running; a zombie does not)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) runs no more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(path: Path, pid: int, now: float | None = None) -> bool:
    """A temporary file or folder of process ``pid`` is stale: the process is gone and the path has not been
    written to for :data:`STALE_AFTER_S` seconds."""
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age >= STALE_AFTER_S and not pid_alive(pid)


def remove_stale(folder: Path, pattern: re.Pattern = TEMPORARY) -> list[Path]:
    """Delete the stale temporaries in ``folder`` whose names match ``pattern`` (group 1: the owner pid);
    returns what was removed, each logged at warning level."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in entries:
        match = pattern.match(path.name)
        if match is None or not is_stale(path, int(match.group(1))):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("could not remove the stale temporary %s (%s)", path, error)
            continue
        log.warning("removed %s, left by process %s, which is gone (killed, or stopped by a full disk)",
                    path, match.group(1))
        removed.append(path)
    return removed


def _record(path: Path, kind: str, params: dict, nbytes: int, rows: int) -> None:
    USED[str(path)] = {"kind": kind, "params": params, "path": str(path), "nbytes": int(nbytes), "rows": int(rows)}


def digest(params: dict) -> str:
    """A short stable hash of JSON-able parameters."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(video: Video) -> str:
    """Hash of the frame folder, frame file names, sizes and modification times: changes when frames change."""
    h = hashlib.sha256(str(Path(video.folder).resolve()).encode())
    for number, path in video.frame_files.items():
        stat = path.stat()
        h.update(f"{number}:{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def entry_path(root: Path, video: Video, kind: str, params: dict) -> Path:
    """The entry's file; the video folder is keyed by its frame folder too, so copies of a dataset with the
    same video names (the smoke and default synthetic sets, two real copies) never share entries, and by the
    frame step and the frame limit, so a video read at every k-th frame, or cut short, never shares the full
    video's entries."""
    folder = hashlib.sha256(str(Path(video.folder).resolve()).encode()).hexdigest()[:8]
    every = f"-every{video.frame_step}" if video.frame_step > 1 else ""
    first = f"-first{video.max_frames}" if video.max_frames is not None else ""
    return (Path(root) / _safe(video.dataset) / f"{_safe(video.name)}-{folder}{every}{first}"
            / f"{kind}-{digest(params)}.npy")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def _meta(kind: str, params: dict, source: str) -> dict:
    return {"kind": kind, "params": params, "source": source, "format": CACHE_FORMAT, "opencv": cv2.__version__}


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def open_entry(path: Path, kind: str, params: dict, source: str) -> np.ndarray | None:
    """The entry as a read-only memory map, or None when it is missing, stale, truncated or corrupted."""
    sidecar = path.with_suffix(".json")
    remove_stale(path.parent)
    if not path.exists() or not sidecar.exists():
        return None
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        log.info("rebuilding %s: unreadable sidecar", path)
        return None
    if stored.get("meta") != json.loads(json.dumps(_meta(kind, params, source), default=str)):
        log.info("rebuilding %s: stale (parameters, source frames or versions changed)", path)
        return None
    size = path.stat().st_size
    if size != stored.get("nbytes"):
        log.info("rebuilding %s: truncated or wrong size (%d bytes, expected %s)", path, size, stored.get("nbytes"))
        return None
    if _file_crc(path) != stored.get("crc32"):
        log.info("rebuilding %s: corrupted (checksum mismatch)", path)
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        log.info("rebuilding %s: unreadable (%s)", path, error)
        return None
    if list(array.shape) != stored.get("shape") or array.dtype.str != stored.get("dtype"):
        log.info("rebuilding %s: shape or dtype differ from the sidecar", path)
        return None
    _record(path, kind, params, size, len(array))
    return array


class EntryWriter:
    """Stream an array of known shape to a cache entry, chunk by chunk along the first axis.

    Use as a context manager; on a clean exit the entry is complete, checked and renamed into place, on an
    error the temporary file is removed and any previous entry is left as it was.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype, kind: str, params: dict, source: str):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.meta = _meta(kind, params, source)
        self.kind, self.params = kind, params
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.rows = 0
        self.file = None

    def __enter__(self) -> EntryWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.path.parent)
        self.file = open(self.tmp, "wb")
        np.lib.format.write_array_header_1_0(
            self.file, {"descr": self.dtype.str, "fortran_order": False, "shape": self.shape})
        return self

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: rows of shape {rows.shape} do not fit an entry of shape {self.shape} "
                             f"after {self.rows} rows")
        self.file.write(rows.data)
        self.rows += len(rows)

    def __exit__(self, error_type, error, traceback) -> None:
        try:
            self.file.close()
        except BaseException:  # a full disk can fail the last flush: leave no temporary behind
            self.tmp.unlink(missing_ok=True)
            if error_type is None:
                raise
        if error_type is None and self.rows != self.shape[0]:
            self.tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: {self.rows} rows written, the entry declares {self.shape[0]}")
        if error_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        sidecar = self.path.with_suffix(".json")
        sidecar.unlink(missing_ok=True)
        record = {"meta": self.meta, "shape": list(self.shape), "dtype": self.dtype.str,
                  "nbytes": self.tmp.stat().st_size, "crc32": _file_crc(self.tmp)}
        os.replace(self.tmp, self.path)
        sidecar_tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        try:
            sidecar_tmp.write_text(json.dumps(record, default=str, indent=1))
            os.replace(sidecar_tmp, sidecar)
        except BaseException:  # a full disk: the entry stays without a sidecar and is rebuilt next time
            sidecar_tmp.unlink(missing_ok=True)
            raise
        _record(self.path, self.kind, self.params, record["nbytes"], self.shape[0])
