"""Face detection, eye-based in-plane alignment and cropping with OpenCV's bundled Haar cascades.

The papers align faces with landmark trackers that cannot ship offline (Yap et al. Sec. 2.1: OpenFace 2.0,
112x112 output; Zhou et al. Sec. 4.2: Libfacedetection). Here OpenCV 4.14's bundled frontal-face and eye
cascades stand in for them. Two ways to place the crop box over a video:

* ``box="first"`` — the box found in the first frame is reused for every frame, the practice of the public
  long-video spotting code: a fixed box adds no jitter, so frame differences and optical flow only see
  facial motion (and head motion, which the spotters must learn to ignore).
* ``box="median"`` — one fixed box for the whole video, the per-coordinate median of the boxes detected
  every ``detect_every`` frames: as steady as ``"first"``, but a missed or off first detection does not
  decide it. The long-video spotters use it: on the synthetic CAS(ME)^2 twin the cascade's box side jitters
  by 3.8 % (s.d. between detections) and a smoothed per-frame box still changes by up to 0.4 px per frame,
  so its zoom alone makes flow larger than a micro-expression's.
* ``box="smoothed"`` — a box per frame (detected every ``detect_every`` frames, linearly interpolated where
  the cascade misses) smoothed over time with a Gaussian of ``smooth_sigma`` frames, for videos where the
  head moves.

A fixed box keeps the head's own motion in the crops. ``register=True`` removes it the way a landmark
aligner's per-frame similarity transform does: every crop is registered to the video's first crop by an
affine ECC transform (Evangelidis & Psarakis 2008, ``cv2.findTransformECC``; invariant to gain and bias),
each frame starting from the previous frame's transform. An expression moves a few facial regions and
barely changes a fit over the whole face; a head shift or turn moves all of it. On the synthetic CAS(ME)^2
twin (6 videos, 48 px) the AUC of a bare pair difference ``|LCN(t) - LCN(t - k)|`` as a frame score rises
from 0.58 to 0.67 (micro) and 0.57 to 0.71 (macro) with registration.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from functools import cache
from typing import Iterator

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from mecore.data.dataset import DatasetError, Video

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
DETECT_MAX_SIDE = 640  # frames are downscaled to this longest side for detection (SAMM frames are 2040 wide)
BOX_MODES = ("first", "median", "smoothed")
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
ECC_BLUR = 5  # Gaussian kernel ECC smooths both images with before matching


@dataclass(frozen=True)
class CropSpec:
    """How faces are cropped; every field changes the result and is part of the cache key.

    ``margin`` widens the (square) cascade box by that fraction of its side on every side: the frontal
    cascade's box runs from the eyebrows to the lower lip, and 0.1 brings in the forehead and chin, close to
    OpenFace's aligned 112x112 face used by Yap et al. Sec. 2.1.
    """

    size: int = 112
    box: str = "first"
    align: bool = False
    margin: float = 0.1
    gray: bool = True
    smooth_sigma: float = 5.0
    detect_every: int = 1
    register: bool = False

    def cache_key(self) -> dict:
        """The fields as cache parameters; ``register`` only when on, so entries written before it existed stay valid."""
        return {k: v for k, v in asdict(self).items() if k != "register" or v}

    def __post_init__(self):
        if self.box not in BOX_MODES:
            raise ValueError(f"CropSpec.box must be one of {BOX_MODES}, got {self.box!r}")
        if self.size < 8 or self.detect_every < 1 or self.margin < 0:
            raise ValueError(f"invalid CropSpec {self}: size >= 8, detect_every >= 1 and margin >= 0 required")


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if classifier.empty():
        raise RuntimeError(f"OpenCV could not load its bundled cascade {name}: "
                           "opencv-contrib-python-headless 4.x must be the only OpenCV package")
    return classifier


def to_gray(image: np.ndarray) -> np.ndarray:
    """A uint8 grey image from a BGR or grey frame."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def detect_face(image: np.ndarray) -> np.ndarray | None:
    """The most confident frontal face as ``(x, y, w, h)`` floats in image pixels, or None.

    Faces narrower than a sixth of the shorter image side are ignored (the datasets film one face filling the
    frame). Among several candidates the one the cascade confirmed most often wins, not the largest: the
    cascade's false positives on clothing are often larger than the face.
    """
    gray = to_gray(image)
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)
    min_side = max(20, min(small.shape) // 6)
    boxes, hits = _cascade(FACE_CASCADE).detectMultiScale2(small, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=(min_side, min_side))
    if len(boxes) == 0:
        return None
    best = int(np.argmax(np.asarray(hits).ravel()))
    return np.asarray(boxes[best], dtype=np.float64) / scale


def eye_angle(image: np.ndarray, box: np.ndarray) -> float | None:
    """The in-plane roll of the face in degrees (positive: the person's left eye, on the image right, is lower).

    Eyes are searched with the bundled eye cascade in the upper 60 % of the face box; the most confident
    detection in each half of the box is taken. None when an eye is not found.
    """
    gray = to_gray(image)
    x, y, w, h = np.round(box).astype(int)
    x0, y0 = max(x, 0), max(y, 0)
    region = gray[y0:y + int(0.6 * h), x0:x + w]
    if region.size == 0:
        return None
    eyes, hits = _cascade(EYE_CASCADE).detectMultiScale2(region, scaleFactor=1.1, minNeighbors=5,
                                                         minSize=(max(w // 10, 5),) * 2, maxSize=(w // 3,) * 2)
    centres = [(ex + ew / 2 + x0, ey + eh / 2 + y0, n) for (ex, ey, ew, eh), n in zip(eyes, np.ravel(hits))]
    left = [c for c in centres if c[0] < x + w / 2]
    right = [c for c in centres if c[0] >= x + w / 2]
    if not left or not right:
        return None
    lx, ly, _ = max(left, key=lambda c: c[2])
    rx, ry, _ = max(right, key=lambda c: c[2])
    return math.degrees(math.atan2(ry - ly, rx - lx))


def square_box(box: np.ndarray, margin: float) -> np.ndarray:
    """A square box around ``box``'s centre, its side the larger of w and h widened by ``margin`` per side."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    return np.array([x + w / 2 - side / 2, y + h / 2 - side / 2, side, side])


def crop_face(image: np.ndarray, box: np.ndarray, size: int, angle: float = 0.0, gray: bool = True) -> np.ndarray:
    """Cut ``box`` out of ``image`` (rotated by ``angle`` degrees about the box centre) and resize it to size x size.

    Pixels outside the frame repeat the border. The box is snapped to whole pixels so that an unrotated crop
    copies pixels exactly; the resize uses area averaging, which does not alias when shrinking.
    """
    source = to_gray(image) if gray else image
    x, y, side, _ = np.round(box).astype(int)
    side = max(side, 1)
    centre = (x + side / 2, y + side / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    matrix[:, 2] -= (x, y)
    patch = cv2.warpAffine(source, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def _describe(source: Video | np.ndarray) -> str:
    return f"video {source.name!r} ({source.folder})" if isinstance(source, Video) else "the input frames"


def iter_source(source: Video | np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(frame_numbers, frames)`` chunks of a Video, or of an (N, H, W[, 3]) array numbered 0..N-1."""
    if isinstance(source, Video):
        yield from source.iter_chunks(chunk)
        return
    for start in range(0, len(source), chunk):
        yield np.arange(start, min(start + chunk, len(source))), source[start:start + chunk]


def _first_frame(source: Video | np.ndarray) -> tuple[int, np.ndarray]:
    if isinstance(source, Video):
        return source.first_frame, source.frame(source.first_frame)
    return 0, source[0]


def face_boxes(source: Video | np.ndarray, spec: CropSpec, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Square crop boxes ``(N, 4)`` and roll angles ``(N,)`` for every frame of ``source`` (see module docs).

    Raises DatasetError naming the video and frame when no face is found: the first frame for
    ``box="first"``, the whole frame range otherwise.
    """
    n_frames = source.n_frames if isinstance(source, Video) else len(source)
    if n_frames == 0:
        raise DatasetError(f"{_describe(source)} has no frames")
    if spec.box == "first":
        number, frame = _first_frame(source)
        found = detect_face(frame)
        if found is None:
            raise DatasetError(f"no face found in frame {number} of {_describe(source)} (OpenCV frontal Haar cascade)")
        angle = _angle_or_zero(frame, found, number, source) if spec.align else 0.0
        return np.tile(square_box(found, spec.margin), (n_frames, 1)), np.full(n_frames, angle)

    positions, boxes, angles = [], [], []
    offset, first_number, last_number = 0, None, None
    for numbers, frames in iter_source(source, chunk):
        first_number = numbers[0] if first_number is None else first_number
        last_number = numbers[-1]
        for i in range(len(frames)):
            if (offset + i) % spec.detect_every:
                continue
            found = detect_face(frames[i])
            if found is not None:
                positions.append(offset + i)
                boxes.append(square_box(found, spec.margin))
                angles.append(eye_angle(frames[i], found) if spec.align else 0.0)
        offset += len(frames)
    if not positions:
        raise DatasetError(f"no face found in any of frames {first_number}..{last_number} of "
                           f"{_describe(source)} (OpenCV frontal Haar cascade)")
    tried = len(range(0, n_frames, spec.detect_every))
    if len(positions) < tried / 2:
        warnings.warn(f"face found in only {len(positions)} of {tried} frames searched in {_describe(source)}; "
                      "the boxes in between are interpolated", stacklevel=2)
    everywhere = np.arange(n_frames)
    boxes = np.stack(boxes)
    if spec.box == "median":
        angle = float(np.median([a for a in angles if a is not None] or [0.0]))
        return np.tile(np.median(boxes, axis=0), (n_frames, 1)), np.full(n_frames, angle)
    filled = np.stack([np.interp(everywhere, positions, boxes[:, j]) for j in range(4)], axis=1)
    smoothed = gaussian_filter1d(filled, spec.smooth_sigma, axis=0, mode="nearest") if spec.smooth_sigma > 0 else filled
    angle_known = [(p, a) for p, a in zip(positions, angles) if a is not None]
    if spec.align and not angle_known:
        warnings.warn(f"no pair of eyes found in {_describe(source)}: faces are not rotated", stacklevel=2)
    if angle_known:
        angle_positions, angle_values = zip(*angle_known)
        roll = np.interp(everywhere, angle_positions, angle_values)
        roll = gaussian_filter1d(roll, spec.smooth_sigma, mode="nearest") if spec.smooth_sigma > 0 else roll
    else:
        roll = np.zeros(n_frames)
    return smoothed, roll


def _angle_or_zero(frame: np.ndarray, box: np.ndarray, number: int, source: Video | np.ndarray) -> float:
    angle = eye_angle(frame, box)
    if angle is None:
        warnings.warn(f"no pair of eyes found in frame {number} of {_describe(source)}: faces are not rotated",
                      stacklevel=3)
        return 0.0
    return angle


def iter_face_crops(source: Video | np.ndarray, spec: CropSpec = CropSpec(),
                    chunk: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream ``(frame_numbers, crops)`` chunks of uint8 face crops, (n, size, size) or (n, size, size, 3).

    Memory holds one chunk of frames at a time (plus, for ``box="smoothed"``, 5 numbers per frame); with
    ``box="smoothed"`` the frames are read twice, once to detect and once to crop.
    """
    boxes, angles = face_boxes(source, spec, chunk)
    position = 0
    register = registration() if spec.register else None
    for numbers, frames in iter_source(source, chunk):
        crops = np.stack([crop_face(frame, boxes[position + i], spec.size, angles[position + i], spec.gray)
                          for i, frame in enumerate(frames)])
        position += len(frames)
        yield numbers, (np.stack([register(face) for face in crops]) if register else crops)


def registration():
    """A function that registers each crop it is given to the first one (see the module docs): affine ECC,
    started from the previous crop's transform; where ECC does not converge the previous transform is kept."""
    template, warp = None, np.eye(2, 3, dtype=np.float32)

    def register(face: np.ndarray) -> np.ndarray:
        nonlocal template, warp
        grey = to_gray(face).astype(np.float32)
        if template is None:
            template = grey
        try:
            _, warp = cv2.findTransformECC(template, grey, warp, cv2.MOTION_AFFINE, ECC_CRITERIA, None, ECC_BLUR)
        except cv2.error:
            pass
        return cv2.warpAffine(face, warp, face.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    return register


def crop_faces(source: Video | np.ndarray, spec: CropSpec = CropSpec()) -> np.ndarray:
    """All face crops of ``source`` in memory: for clips and examples; long videos go through the cache."""
    return np.concatenate([crops for _, crops in iter_face_crops(source, spec)])
