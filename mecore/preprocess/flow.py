"""Dense optical flow behind one function, optical strain, and flow between frames t and t + k.

Backends (all OpenCV, all on uint8 grey images):

* ``"tvl1"`` — Dual TV-L1 (Zach, Pock and Bischof 2007) with OpenCV's defaults (5 scales, 5 warps, 30 inner and
  10 outer iterations): the paper-faithful choice, as Zhou et al. (FR) Sec. 3.1 / 4.2 and He et al. Sec. 3
  use TV-L1. About 5 pairs per second on 128x128 faces with two cores.
* ``"tvl1_reduced"`` — the same energy with 3 scales, 3 warps, epsilon 0.05, 10 inner and 3 outer iterations:
  about 8x faster, about 0.1 px mean end-point difference to ``"tvl1"`` on faces.
* ``"dis"`` — DIS (Kroeger et al. 2016), preset "fast": the fast default for flow on every frame of long
  videos (hundreds to thousands of pairs per second). Not a paper's choice. Preset "fast" rather than "medium":
  on consecutive frames of the synthetic videos (sensor noise, JPEG) "medium" reports 0.2 px of mean motion on
  a still face and differs from TV-L1 by about 0.2 px, "fast" by 0.06-0.08 px (as reduced TV-L1), at a third
  of the time.
* ``"farneback"`` — Farneback polynomial expansion (pyramid 0.5, 3 levels, window 15, 3 iterations, poly 5/1.2).

Flow is ``(H, W, 2)`` float32, ``flow[y, x] = (dx, dy)`` in pixels, mapping ``prev`` onto ``nxt``:
``nxt[y + dy, x + dx] ~ prev[y, x]``.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

from mecore.preprocess.face import to_gray


FLOW_SETTINGS = {  # method -> the settings passed to its OpenCV constructor (part of every cache key)
    "tvl1": {},
    "tvl1_reduced": {"nscales": 3, "warps": 3, "epsilon": 0.05, "innnerIterations": 10, "outerIterations": 3},
    "dis": {"preset": cv2.DISOPTICAL_FLOW_PRESET_FAST},
    "farneback": {"numLevels": 3, "pyrScale": 0.5, "winSize": 15, "numIters": 3, "polyN": 5, "polySigma": 1.2},
}
_CONSTRUCTORS = {"tvl1": cv2.optflow.DualTVL1OpticalFlow_create,
                 "tvl1_reduced": cv2.optflow.DualTVL1OpticalFlow_create,
                 "dis": cv2.DISOpticalFlow_create,
                 "farneback": cv2.FarnebackOpticalFlow_create}
FLOW_METHODS = tuple(FLOW_SETTINGS)


def optical_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from ``prev`` to ``nxt`` (grey or BGR uint8 images of one size) as (H, W, 2) float32."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if prev.shape != nxt.shape:
        raise ValueError(f"flow needs two images of one size, got {prev.shape} and {nxt.shape}")
    if prev.dtype != np.uint8 or nxt.dtype != np.uint8:
        raise ValueError(f"flow needs uint8 images, got {prev.dtype} and {nxt.dtype}")
    return _CONSTRUCTORS[method](**FLOW_SETTINGS[method]).calc(to_gray(prev), to_gray(nxt), None)


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Optical strain magnitude of a flow field, (H, W) float32.

    The infinitesimal strain tensor ``eps = (grad u + grad u^T) / 2`` of the displacement ``u = (dx, dy)``, with
    derivatives by central differences as in Shreve et al. 2009 and Liong et al. 2016 (Fu et al. refs. [23],
    [17]; STSTNet's third channel, Zhou et al. Sec. 2.2.2): ``|eps| = sqrt(exx^2 + eyy^2 + 2 exy^2)``,
    ``exy = (du/dy + dv/dx) / 2``. A translation has zero strain; ``u = (a x, b y)`` has ``sqrt(a^2 + b^2)``.
    """
    du_dy, du_dx = np.gradient(flow[..., 0].astype(np.float32))
    dv_dy, dv_dx = np.gradient(flow[..., 1].astype(np.float32))
    shear = 0.5 * (du_dy + dv_dx)
    return np.sqrt(du_dx ** 2 + dv_dy ** 2 + 2 * shear ** 2)


def flow_with_strain(flow: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32: the flow's dx, dy and its optical strain (STSTNet / SOFTNet's three input channels)."""
    return np.dstack([flow, optical_strain(flow)]).astype(np.float32)


def window_flows(window: np.ndarray, first_new: int, k: int, method: str) -> np.ndarray:
    """Flows ``window[i] -> window[i + k]`` for every pair whose later frame is at ``first_new`` or beyond.

    Used to stream a video chunk by chunk: ``window`` is the last ``k`` frames of the previous chunk followed by
    the new chunk, so every pair is computed exactly once. Returns (n_pairs, H, W, 3): dx, dy, strain.
    """
    starts = range(max(first_new - k, 0), len(window) - k)
    shape = window.shape[1:3]
    flows = [flow_with_strain(optical_flow(window[i], window[i + k], method)) for i in starts]
    return np.stack(flows) if flows else np.empty((0, *shape, 3), np.float32)


def iter_flows(chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int = 1,
               method: str = "dis") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the flow from frame t to frame t + k over ``(frame_numbers, frames)`` chunks.

    Yields ``(numbers_of_t, flows)`` with flows (n, H, W, 3) = dx, dy, strain. ``t + k`` counts positions in the
    sequence (frame files present), not frame numbers. Memory holds one chunk plus ``k`` frames.
    """
    if k < 1:
        raise ValueError(f"the frame step k must be >= 1, got {k}")
    tail_numbers, tail = np.empty(0, np.int64), None
    for numbers, frames in chunks:
        window = frames if tail is None else np.concatenate([tail, frames])
        window_numbers = np.concatenate([tail_numbers, numbers])
        first_new = 0 if tail is None else len(tail)
        flows = window_flows(window, first_new, k, method)
        if len(flows):
            start = max(first_new - k, 0)
            yield window_numbers[start:start + len(flows)], flows
        tail, tail_numbers = window[-k:], window_numbers[-k:]


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field as an RGB uint8 image: hue is the direction, brightness the magnitude.

    Magnitudes are scaled by ``max_magnitude`` (default: the field's own maximum), so pass one value to compare
    several fields.
    """
    magnitude, angle = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    scale = max_magnitude if max_magnitude is not None else float(magnitude.max())
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = np.round(angle * 90 / np.pi).astype(np.uint8) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / scale * 255 if scale > 0 else 0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
