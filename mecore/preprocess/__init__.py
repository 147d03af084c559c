"""Preprocessing: face crop and alignment, Local Contrast Normalisation, optical flow and strain, cached and streamed.

* :mod:`~mecore.preprocess.face` — Haar-cascade face detection, eye-based roll alignment, crops.
* :mod:`~mecore.preprocess.lcn` — Local Contrast Normalisation (Yap et al. 2022, Eq. 1).
* :mod:`~mecore.preprocess.flow` — TV-L1 / reduced TV-L1 / DIS / Farneback flow, optical strain, k-frame flows.
* :mod:`~mecore.preprocess.cache` — atomic, checksummed, memory-mapped per-video cache entries.
* :mod:`~mecore.preprocess.pipeline` — one streamed pass per video, onset-apex flow, parallel over videos.
"""
from mecore.preprocess.face import CropSpec, crop_face, crop_faces, detect_face, eye_angle, face_boxes, iter_face_crops
from mecore.preprocess.flow import FLOW_METHODS, flow_to_rgb, flow_with_strain, iter_flows, optical_flow, optical_strain
from mecore.preprocess.lcn import lcn
from mecore.preprocess.pipeline import (onset_apex_flow, onset_apex_flows, pair_flow, preprocess_dataset,
                                        preprocess_video, read_chunks)

__all__ = [
    "CropSpec", "crop_face", "crop_faces", "detect_face", "eye_angle", "face_boxes", "iter_face_crops",
    "FLOW_METHODS", "flow_to_rgb", "flow_with_strain", "iter_flows", "optical_flow", "optical_strain",
    "lcn", "onset_apex_flow", "onset_apex_flows", "pair_flow", "preprocess_dataset", "preprocess_video",
    "read_chunks",
]
