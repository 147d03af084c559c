"""The embedded synthetic datasets: complete datasets written in the real on-disk layouts.

Each writer produces frames as image files plus the annotation workbook (same file name, sheets,
columns, preamble rows and quirks as the real releases), so the real
loaders in :mod:`mecore.data.loaders` read them unchanged. Frames come from
:mod:`mecore.data.synthetic_face`: per-subject identities, expressions as local motion of facial
regions driven by action units, and distractors (blinks, head drift and quick head movements,
illumination changes, sensor noise, JPEG compression).

Design choices, stated once:

* Durations follow Yap et al. Table 2 in spirit: micro-expressions 0.2-0.5 s (mean about 0.37 s),
  macro-expressions 0.5-4 s (the issue's bound; real SAMM-LV macros reach 26 s). Micro motion peaks
  at 0.8-1.6 px on a face about 100 px wide, macro at 2.5-5 px.
* Long videos hold more expressions per minute than the real sets (CAS(ME)^2's move-to-neutral
  ratio is about 0.05, SAMM-LV's 0.40) and micro-expressions are as common as macro ones: the
  default profile must give a model enough examples to learn from on two CPU cores. SAMM-LV-like
  videos land near the real 0.40; CAS(ME)^2-like near 0.15.
* Emotion classes are tied to AU patterns (:data:`EMOTION_AUS`) so recognition is learnable.
* Every random draw comes from ``numpy.random.default_rng`` seeded from (seed, dataset, subject,
  video), so a dataset is identical for a seed whatever the order it is written in.
* A written set is read as it is: its stamp (``mecore_synthetic.json``) says its seed, profile, sizes and
  generator version, and :func:`mecore.loso.run_key` puts the stamp in every LOSO run's key and
  ``config.json``. It is regenerated only when asked (another ``seed`` given, ``force``), when its stamp is
  missing or incomplete, or when the generator (version or sizes) changed, each time with a warning
  naming the folder and the reason.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import paths
from .synthetic_face import FaceRenderer, Identity

EMOTION_AUS: dict[str, list[list[str]]] = {
    "happiness": [["6", "12"], ["12"], ["6", "12", "25"]],
    "surprise": [["1", "2"], ["1", "2", "5"], ["1", "2", "26"]],
    "disgust": [["9"], ["9", "10"], ["4", "9"], ["10", "L10"]],
    "repression": [["14"], ["15"], ["17", "24"], ["14", "17"]],
    "sadness": [["1", "4"], ["1", "4", "15"], ["15", "17"]],
    "fear": [["1", "2", "4"], ["1", "2", "4", "20"], ["20"]],
    "anger": [["4"], ["4", "7"], ["4", "7", "23"]],
    "contempt": [["R12"], ["R14"], ["L14"]],
    "others": [["7"], ["L2"], ["R10"], ["17"], ["25"]],
}
# The real sets' emotion vocabularies, each mapped to the AU family it is drawn from.
CASME_SQ_EMOTIONS = {"negative": ["disgust", "anger", "sadness", "fear"], "positive": ["happiness"],
                     "surprise": ["surprise"], "others": ["others"]}
CASME_SQ_VIDEOS = {  # naming rule2: video code -> video name, and the stimulus emotion it elicits
    "0101": ("disgust1", "negative", "disgustingteeth"), "0102": ("disgust2", "negative", "eatingworms"),
    "0401": ("anger1", "negative", "girlcrashing"), "0402": ("anger2", "negative", "pushingperson"),
    "0502": ("happy1", "positive", "funnyfriends"), "0503": ("happy2", "positive", "funnydog"),
    "0505": ("happy3", "positive", "funnybaby"), "0507": ("happy4", "positive", "funnyerrors"),
    "0508": ("happy5", "positive", "funnyfall"),
}
CASME2_EMOTIONS = {"others": 0.3, "disgust": 0.22, "happiness": 0.14, "repression": 0.11, "surprise": 0.11,
                   "fear": 0.06, "sadness": 0.06}
SAMM_EMOTIONS = {"Anger": 0.25, "Other": 0.15, "Happiness": 0.15, "Surprise": 0.12, "Contempt": 0.12,
                 "Disgust": 0.09, "Fear": 0.06, "Sadness": 0.06}
SMIC_EMOTIONS = {"negative": ["disgust", "sadness", "fear", "anger"], "positive": ["happiness"],
                 "surprise": ["surprise"]}

PROFILES = {
    "smoke": dict(
        casme_sq=dict(subjects=3, videos=1, seconds=12, micro=2, macro=2),
        samm_lv=dict(subjects=3, videos=1, seconds=4, micro=1, macro=1),
        casme2=dict(subjects=3, clips=4), samm=dict(subjects=3, clips=4),
        smic=dict(subjects=3, clips=3), smic_e=dict(subjects=2, clips=2, seconds=1.5),
    ),
    "default": dict(
        casme_sq=dict(subjects=6, videos=2, seconds=40, micro=3, macro=3),
        samm_lv=dict(subjects=5, videos=2, seconds=16, micro=2, macro=2),
        casme2=dict(subjects=8, clips=10), samm=dict(subjects=8, clips=10),
        smic=dict(subjects=8, clips=8), smic_e=dict(subjects=4, clips=4, seconds=2.5),
    ),
    "large": dict(
        casme_sq=dict(subjects=22, videos=4, seconds=90, micro=3, macro=6),
        samm_lv=dict(subjects=16, videos=3, seconds=30, micro=3, macro=4),
        casme2=dict(subjects=26, clips=10), samm=dict(subjects=28, clips=6),
        smic=dict(subjects=16, clips=10), smic_e=dict(subjects=8, clips=6, seconds=4.0),
    ),
}
DATASETS = ("casme_sq", "samm_lv", "casme2", "samm", "smic", "smic_e", "cde")
_GENERATOR_VERSION = 3
STAMP_NAME = "mecore_synthetic.json"
CDE_COMPONENTS = ("casme2", "samm", "smic")
STAGING = re.compile(r"^\..+\.partial-(\d+)$")  # .<dataset>.partial-<pid>, a set being written
log = logging.getLogger(__name__)


@dataclass
class Camera:
    """How a dataset's camera records: frame rate, size, colour, noise and file format."""

    fps: float
    size: int = 160
    grayscale: bool = False
    noise_sigma: float = 2.0
    jpeg_quality: int | None = 90  # None: lossless BMP
    near_infrared: bool = False

    def encode(self, frame: np.ndarray) -> np.ndarray:
        if self.near_infrared:  # NIR: skin bright and flat, low contrast, grey
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
            frame = np.clip(0.55 * grey + 95, 0, 255).astype(np.uint8)
        elif self.grayscale:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return frame

    def write(self, path: Path, frame: np.ndarray) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality] if self.jpeg_quality else []
        if not cv2.imwrite(str(path), self.encode(frame), params):
            raise OSError(f"{path}: could not write frame")


@dataclass
class Event:
    """One expression: inclusive 0-based frame positions within its video."""

    onset: int
    apex: int
    offset: int
    type: str
    emotion: str
    aus: list[str]
    peak_px: float

    def intensity(self, t: np.ndarray) -> np.ndarray:
        """Raised-cosine rise onset -> apex and fall apex -> offset; exactly 0 at onset and offset."""
        rise = 0.5 - 0.5 * np.cos(np.pi * (t - self.onset) / max(self.apex - self.onset, 1))
        fall = 0.5 + 0.5 * np.cos(np.pi * (t - self.apex) / max(self.offset - self.apex, 1))
        value = np.where(t <= self.apex, rise, fall)
        return np.where((t >= self.onset) & (t <= self.offset), value, 0.0)

    @property
    def au_string(self) -> str:
        return "+".join(self.aus)


@dataclass
class VideoPlan:
    """Everything needed to render one video deterministically."""

    n_frames: int
    events: list[Event]
    seed: int
    distractors: bool = True
    blinks: list[tuple[int, int]] = field(default_factory=list)


def _rng(*keys) -> np.random.Generator:
    return np.random.default_rng([hash_key(k) for k in keys])


def hash_key(key) -> int:
    """A stable non-negative integer for any key with a stable ``repr`` (Python's hash() is salted)."""
    if isinstance(key, (int, np.integer)) and key >= 0:
        return int(key)
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")


def sample_aus(rng: np.random.Generator, family: str) -> list[str]:
    patterns = EMOTION_AUS[family]
    return list(patterns[rng.integers(len(patterns))])


def sample_duration(rng: np.random.Generator, kind: str, fps: float, macro_mean_s: float = 1.3) -> int:
    """Duration in frames: micro 0.2-0.5 s; macro log-normal around ``macro_mean_s``, clipped to 0.5-4 s."""
    if kind == "micro":
        seconds = rng.uniform(0.2, 0.5)
    else:
        seconds = float(np.clip(rng.lognormal(np.log(macro_mean_s), 0.45), 0.55, 4.0))
    return max(3, int(round(seconds * fps)))


def make_event(rng, kind: str, onset: int, n: int, emotion: str, family: str) -> Event:
    apex = onset + int(round((n - 1) * rng.uniform(0.3, 0.55)))
    peak = rng.uniform(0.8, 1.6) if kind == "micro" else rng.uniform(2.5, 5.0)
    return Event(onset, apex, onset + n - 1, kind, emotion, sample_aus(rng, family), float(peak))


def plan_long_video(rng, n_frames: int, fps: float, n_micro: int, n_macro: int, emotion_of,
                    macro_mean_s: float) -> list[Event]:
    """Place non-overlapping expressions with at least 0.7 s of neutral between them."""
    kinds = ["micro"] * n_micro + ["macro"] * n_macro
    rng.shuffle(kinds)
    gap, margin = int(0.7 * fps), int(0.5 * fps)
    for _ in range(1000):
        lengths = [sample_duration(rng, k, fps, macro_mean_s) for k in kinds]
        free = n_frames - 2 * margin - sum(lengths) - gap * (len(kinds) - 1)
        if free >= 0:
            break
    else:
        raise ValueError(f"cannot place {len(kinds)} expressions in a {n_frames}-frame video")
    cuts = np.sort(rng.integers(0, free + 1, len(kinds)))
    events, start = [], margin
    for kind, n, slack in zip(kinds, lengths, np.diff(np.concatenate([[0], cuts]))):
        start += int(slack)
        emotion, family = emotion_of(rng)
        events.append(make_event(rng, kind, start, n, emotion, family))
        start += n + gap
    return events


def plan_blinks(rng, n_frames: int, fps: float, events: list[Event] = ()) -> list[tuple[int, int]]:
    """Blinks every 2-6 s, each 0.1-0.3 s long, in the neutral stretches only.

    Real blinks also happen during expressions; keeping them out of annotated intervals keeps
    the onset/apex/offset frames clean for teaching, while blinks stay distractors elsewhere.
    """
    blinks, t = [], rng.uniform(0.5, 3.0) * fps
    while t < n_frames - 0.4 * fps:
        length = max(2, int(rng.uniform(0.1, 0.3) * fps))
        start, stop = int(t), int(t) + length - 1
        if not any(start <= e.offset + 2 and stop >= e.onset - 2 for e in events):
            blinks.append((start, stop))
        t += length + rng.uniform(2.0, 6.0) * fps
    return blinks


def _smooth_walk(rng, n: int, fps: float, amplitude: float) -> np.ndarray:
    """Slow drift: a sum of a few random low-frequency sinusoids, peak about ``amplitude``."""
    t = np.arange(n) / fps
    walk = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.02, 0.15) * t + rng.uniform(0, 2 * np.pi))
               for _ in range(3))
    return amplitude * walk / 2.0


def _steps(rng, n: int, fps: float, every_s: float, size: float) -> np.ndarray:
    """Quick movements: smooth steps of random sign lasting about 0.3 s, every ``every_s`` on average."""
    out, t = np.zeros(n), np.arange(n)
    for centre in rng.uniform(0, n, rng.poisson(n / fps / every_s)):
        out += rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) * size / (1 + np.exp(-(t - centre) / (0.06 * fps)))
    return out


def render_video(renderer: FaceRenderer, plan: VideoPlan, camera: Camera):
    """Yield the frames of a planned video one at a time (memory does not grow with length)."""
    rng = np.random.default_rng(plan.seed)
    n, fps = plan.n_frames, camera.fps
    t = np.arange(n)
    if plan.distractors:
        tx = _smooth_walk(rng, n, fps, 2.5) + _steps(rng, n, fps, 20.0, 2.0)
        ty = _smooth_walk(rng, n, fps, 1.5) + _steps(rng, n, fps, 25.0, 1.5)
        rot = _smooth_walk(rng, n, fps, 1.5)
        scale = 1 + _smooth_walk(rng, n, fps, 0.015)
        gain = 1 + _smooth_walk(rng, n, fps, 0.06) + _steps(rng, n, fps, 30.0, 0.06)
        gradient = _smooth_walk(rng, n, fps, 0.15)
    else:
        tx = ty = rot = gradient = np.zeros(n)
        scale = gain = np.ones(n)
    blink = np.zeros(n)
    for start, stop in plan.blinks:
        blink[start:stop + 1] = np.sin(np.linspace(0, np.pi, stop - start + 1))
    curves = [(event, event.intensity(t) * event.peak_px) for event in plan.events]
    for i in range(n):
        aus: dict[str, float] = {}
        for event, curve in curves:
            if curve[i]:
                for au in event.aus:
                    aus[au] = aus.get(au, 0.0) + float(curve[i])
        yield renderer.frame(aus, blink=float(blink[i]), pose=(tx[i], ty[i], rot[i], scale[i]),
                             gain=float(gain[i]), gradient=float(gradient[i]), noise_sigma=camera.noise_sigma, rng=rng)


def write_video(folder: Path, renderer: FaceRenderer, plan: VideoPlan, camera: Camera, frame_name) -> None:
    """Render a plan into ``folder`` with ``frame_name(position) -> file name``."""
    folder.mkdir(parents=True, exist_ok=True)
    for position, frame in enumerate(render_video(renderer, plan, camera)):
        camera.write(folder / frame_name(position), frame)


def write_long_video(folder: Path, seconds: float, fps: float = 30.0, seed: int = 0, size: int = 160) -> VideoPlan:
    """One long CAS(ME)^2-style video (``img%05d.jpg``) of any length, for scale and memory checks."""
    rng = _rng(seed, "long", seconds)
    n = int(round(seconds * fps))
    per_minute = max(1, int(seconds / 60 * 4))
    events = plan_long_video(rng, n, fps, per_minute, per_minute, _casme_sq_emotion, 1.3)
    plan = VideoPlan(n, events, seed, blinks=plan_blinks(rng, n, fps, events))
    write_video(folder, FaceRenderer(Identity.sample(seed), size, seed), plan, Camera(fps, size), lambda p: f"img{p + 1:05d}.jpg")
    return plan


def _casme_sq_emotion(rng, stimulus: str | None = None):
    label = stimulus if stimulus and rng.uniform() < 0.6 else rng.choice(list(CASME_SQ_EMOTIONS))
    return str(label), str(rng.choice(CASME_SQ_EMOTIONS[label]))


def _weighted(rng, table: dict[str, float]) -> str:
    names = list(table)
    weights = np.array([table[k] for k in names])
    return names[rng.choice(len(names), p=weights / weights.sum())]


# ---- the writers, one per real layout ------------------------------------------------------------

def write_casme_sq(root: Path, spec: dict, seed: int, progress) -> None:
    """CAS(ME)^2: ``rawpic/s15/15_0101disgustingteeth/img001.jpg`` + ``CAS(ME)^2code_final.xlsx``."""
    camera = Camera(fps=30.0, size=160)
    rows, rule1, codes = [], [], list(CASME_SQ_VIDEOS)
    for participant in range(1, spec["subjects"] + 1):
        raw = 14 + participant
        rule1.append([raw, f"s{raw}", participant])
        renderer = FaceRenderer(Identity.sample(hash_key(("casme_sq", seed, participant))), camera.size, participant)
        srng = _rng(seed, "casme_sq", participant)
        for code in sorted(str(c) for c in srng.choice(codes, spec["videos"], replace=False)):
            name, stimulus, words = CASME_SQ_VIDEOS[code]
            rng = _rng(seed, "casme_sq", participant, code)
            n = int(spec["seconds"] * camera.fps)
            events = plan_long_video(rng, n, camera.fps, spec["micro"], spec["macro"],
                                     lambda r: _casme_sq_emotion(r, stimulus), 1.3)
            plan = VideoPlan(n, events, hash_key((seed, participant, code)), blinks=plan_blinks(rng, n, camera.fps, events))
            write_video(root / "rawpic" / f"s{raw}" / f"{raw}_{code}{words}", renderer, plan, camera,
                        lambda p: f"img{p + 1:03d}.jpg")
            for index, event in enumerate(events, start=1):
                onset, apex, offset = event.onset + 1, event.apex + 1, event.offset + 1
                if event.type == "macro" and (all(row[4] for row in rows) or rng.uniform() < 0.12):
                    offset = 0  # quirk: unannotated macro offset (44 of 300 real rows)
                elif participant == 2 and index == 1:
                    apex = 0  # quirk: unannotated apex
                rows.append([participant, f"{name}_{index}", onset, apex, offset, event.au_string,
                             event.emotion, f"{event.type}-expression", event.emotion])
            progress.update(n)
    rule2 = [[code, CASME_SQ_VIDEOS[code][0]] for code in codes]
    with pd.ExcelWriter(root / "CAS(ME)^2code_final.xlsx") as book:
        pd.DataFrame(rows).to_excel(book, sheet_name="CASFEcode_final", header=False, index=False)
        pd.DataFrame(rule1).to_excel(book, sheet_name="naming rule1", header=False, index=False)
        pd.DataFrame(rule2).to_excel(book, sheet_name="naming rule2", header=False, index=False)


def write_samm_lv(root: Path, spec: dict, seed: int, progress) -> None:
    """SAMM-LV: ``SAMM_longvideos/006_1/006_1_0001.jpg`` + ``SAMM_LongVideos_V2_Release.xlsx``."""
    camera = Camera(fps=200.0, size=160, grayscale=True)
    rows = []
    for k in range(spec["subjects"]):
        subject = 6 + k
        renderer = FaceRenderer(Identity.sample(hash_key(("samm_lv", seed, subject))), camera.size, subject)
        for v in range(1, spec["videos"] + 1):
            rng = _rng(seed, "samm_lv", subject, v)
            n = int(spec["seconds"] * camera.fps)
            events = plan_long_video(rng, n, camera.fps, spec["micro"], spec["macro"], _samm_emotion,
                                     min(2.0, spec["seconds"] / 6))
            video = f"{subject:03d}_{v}"
            plan = VideoPlan(n, events, hash_key((seed, subject, v)), blinks=plan_blinks(rng, n, camera.fps, events))
            write_video(root / "SAMM_longvideos" / video, renderer, plan, camera, lambda p: f"{video}_{p + 1:04d}.jpg")
            for index, event in enumerate(events, start=1):
                onset, apex, offset = event.onset + 1, event.apex + 1, event.offset + 1
                if rng.uniform() < 0.1:
                    apex = -1  # quirk: apex not annotated
                if rng.uniform() < 0.1:
                    offset = offset + 0.40000000000009  # quirk: float frame numbers
                kind = "Macro" if event.type == "macro" else "Micro - 1/2"
                rows.append([subject, f"{video}_{index}", rng.integers(1, 8), onset, apex, offset,
                             int(offset) - onset, kind, event.au_string, ""])
            progress.update(n)
    header = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
              "Action Units", "Notes"]
    table = with_preamble(["SAMM Long Videos", "Synthetic release written by mecore"] + [""] * 7, header, rows)
    with pd.ExcelWriter(root / "SAMM_LongVideos_V2_Release.xlsx") as book:
        table.to_excel(book, sheet_name="FACS_Movement_Only", header=False, index=False)


def with_preamble(lines: list[str], header: list[str], rows: list[list]) -> pd.DataFrame:
    """A sheet whose header row comes after free-text preamble rows (the SAMM workbooks)."""
    padding = [None] * (len(header) - 1)
    return pd.DataFrame([[line] + padding for line in lines] + [header] + rows)


def _samm_family(emotion: str) -> str:
    return "others" if emotion == "Other" else emotion.lower()


def _samm_emotion(rng) -> tuple[str, str]:
    emotion = _weighted(rng, SAMM_EMOTIONS)
    return emotion, _samm_family(emotion)


def _clip_plan(rng, fps: float, kind: str, emotion: str, family: str, lead_s: float, seed: int) -> VideoPlan:
    n_event = sample_duration(rng, kind, fps)
    lead = int(round(lead_s * fps))
    event = make_event(rng, kind, lead, n_event, emotion, family)
    n = n_event + 2 * lead
    return VideoPlan(n, [event], seed, blinks=[])


def write_casme2(root: Path, spec: dict, seed: int, progress) -> None:
    """CASME II: ``CASME2-RAW/sub01/EP02_01f/img46.jpg`` + ``CASME2-coding-20190701.xlsx`` (2019 columns)."""
    camera = Camera(fps=200.0, size=128)
    rows = []
    for s in range(1, spec["subjects"] + 1):
        renderer = FaceRenderer(Identity.sample(hash_key(("casme2", seed, s))), camera.size, s)
        for c in range(1, spec["clips"] + 1):
            rng = _rng(seed, "casme2", s, c)
            emotion = _weighted(rng, CASME2_EMOTIONS)
            plan = _clip_plan(rng, camera.fps, "micro", emotion, emotion, 0.1, hash_key((seed, "casme2", s, c)))
            first = int(rng.integers(1, 200))
            name = f"EP{rng.integers(1, 20):02d}_{c:02d}f"
            write_video(root / "CASME2-RAW" / f"sub{s:02d}" / name, renderer, plan, camera, lambda p: f"img{first + p}.jpg")
            event = plan.events[0]
            apex = first + event.apex if (s, c) != (1, 2) else "/"  # quirk: one apex is '/'
            rows.append([f"{s:02d}", name, None, first + event.onset, apex, first + event.offset, None,
                         event.au_string, emotion])
            progress.update(plan.n_frames)
    header = ["Subject", "Filename", "Unnamed: 2", "OnsetFrame", "ApexFrame", "OffsetFrame", "Unnamed: 6",
              "Action Units", "Estimated Emotion"]
    pd.DataFrame(rows, columns=header).to_excel(root / "CASME2-coding-20190701.xlsx", index=False)


def write_samm(root: Path, spec: dict, seed: int, progress) -> None:
    """SAMM: ``SAMM/006/006_1_2/006_05562.jpg`` + ``SAMM_Micro_FACS_Codes_v2.xlsx`` (one preamble row)."""
    camera = Camera(fps=200.0, size=128, grayscale=True)
    rows = []
    for k in range(spec["subjects"]):
        subject = 6 + k
        renderer = FaceRenderer(Identity.sample(hash_key(("samm", seed, subject))), camera.size, subject)
        for c in range(1, spec["clips"] + 1):
            rng = _rng(seed, "samm", subject, c)
            emotion = _weighted(rng, SAMM_EMOTIONS)
            plan = _clip_plan(rng, camera.fps, "micro", emotion, _samm_family(emotion), 0.1,
                              hash_key((seed, "samm", subject, c)))
            first = int(rng.integers(1000, 9000))
            name = f"{subject:03d}_{1 + c // 4}_{c}"
            write_video(root / "SAMM" / f"{subject:03d}" / name, renderer, plan, camera,
                        lambda p: f"{subject:03d}_{first + p:05d}.jpg")
            event = plan.events[0]
            objective = {"Anger": 1, "Contempt": 2, "Happiness": 3, "Surprise": 4, "Disgust": 5, "Fear": 6,
                         "Sadness": 7}.get(emotion, 7)
            rows.append([subject, name, rng.integers(1, 8), first + event.onset, first + event.apex,
                         first + event.offset, event.offset - event.onset + 1, "Micro", event.au_string,
                         emotion, objective, ""])
            progress.update(plan.n_frames)
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    with_preamble(["SAMM micro-movements, synthetic release written by mecore"], header, rows).to_excel(
        root / "SAMM_Micro_FACS_Codes_v2.xlsx", header=False, index=False)


SMIC_CAMERAS = {
    "HS": Camera(fps=100.0, size=128, noise_sigma=3.0, jpeg_quality=None),
    "VIS": Camera(fps=25.0, size=128, noise_sigma=1.5, jpeg_quality=None),
    "NIR": Camera(fps=25.0, size=128, noise_sigma=4.0, jpeg_quality=None, near_infrared=True),
}


def write_smic(root: Path, spec: dict, seed: int, progress) -> None:
    """SMIC: ``{HS,VIS,NIR}/s1/micro/negative/s1_ne_01/image000123.bmp`` (no workbook; onset..offset clips).

    The same recordings are rendered by the three cameras; VIS and NIR cover the first half of the
    subjects only, as in the real SMIC (8 of 16 subjects).
    """
    short = {"negative": "ne", "positive": "po", "surprise": "sur"}
    for s in range(1, spec["subjects"] + 1):
        renderer = FaceRenderer(Identity.sample(hash_key(("smic", seed, s))), 128, s)
        for c in range(1, spec["clips"] + 1):
            rng = _rng(seed, "smic", s, c)
            label = str(rng.choice(list(SMIC_EMOTIONS)))
            family = str(rng.choice(SMIC_EMOTIONS[label]))
            seconds = rng.uniform(0.2, 0.5)
            aus, peak, start = sample_aus(rng, family), rng.uniform(0.8, 1.6), int(rng.integers(1000, 90000))
            for variant, camera in SMIC_CAMERAS.items():
                if variant != "HS" and s > max(2, spec["subjects"] // 2):
                    continue
                n = max(5, int(round(seconds * camera.fps)))
                event = Event(0, int(round((n - 1) * 0.45)), n - 1, "micro", label, aus, float(peak))
                plan = VideoPlan(n, [event], hash_key((seed, "smic", s, c)), distractors=True)
                first = int(round(start * camera.fps / 100))
                folder = root / variant / f"s{s}" / "micro" / label / f"s{s}_{short[label]}_{c:02d}"
                write_video(folder, renderer, plan, camera, lambda p: f"image{first + p:06d}.bmp")
                progress.update(n)


def write_smic_e(root: Path, spec: dict, seed: int, progress) -> None:
    """SMIC-E (HS long clips): ``HS_long/s01/s1_ne_01/image012345.bmp`` + ``SMIC-HS-E_annotation.xlsx``.

    Frame files carry absolute frame numbers; the workbook's OnsetF/OffsetF are absolute too, and
    FirstF is the number of the clip's first frame (the loader makes onsets video-relative).
    """
    camera = SMIC_CAMERAS["HS"]
    short = {"negative": "ne", "positive": "po", "surprise": "sur"}
    rows = []
    for s in range(1, spec["subjects"] + 1):
        renderer = FaceRenderer(Identity.sample(hash_key(("smic_e", seed, s))), camera.size, s)
        for c in range(1, spec["clips"] + 1):
            rng = _rng(seed, "smic_e", s, c)
            label = str(rng.choice(list(SMIC_EMOTIONS)))
            n = int(spec["seconds"] * rng.uniform(0.8, 1.2) * camera.fps)
            events = plan_long_video(rng, n, camera.fps, 1, 0, lambda r: (label, str(r.choice(SMIC_EMOTIONS[label]))), 1.0)
            plan = VideoPlan(n, events, hash_key((seed, "smic_e", s, c)), blinks=plan_blinks(rng, n, camera.fps, events))
            first = int(rng.integers(1000, 90000))
            name = f"s{s}_{short[label]}_{c:02d}"
            write_video(root / "HS_long" / f"s{s:02d}" / name, renderer, plan, camera, lambda p: f"image{first + p:06d}.bmp")
            event = events[0]
            rows.append([s, name, first + event.onset, first + event.offset, label, first])
            progress.update(n)
    pd.DataFrame(rows, columns=["Subject", "Filename", "OnsetF", "OffsetF", "Emotion", "FirstF"]).to_excel(
        root / "SMIC-HS-E_annotation.xlsx", index=False)


CDE_LABELS = {"negative": 0, "positive": 1, "surprise": 2}


def write_cde(root: Path, synthetic_root: Path) -> None:
    """The MEGC 2019 composite label file (``dataset,subject,filename,label``) over the synthetic
    CASME II, SAMM and SMIC-HS sets, regrouped to 3 classes as FR paper Table 9."""
    from .loaders import load_casme2, load_samm, load_smic
    from .splits import regroup

    rows = []
    for source, loader, sub in (("casme2", load_casme2, "casme2"), ("samm", load_samm, "samm"),
                                ("smic", load_smic, "smic")):
        table = regroup(loader(synthetic_root / sub, annotations_only=True).annotations, "cde3")
        for row in table.itertuples():
            if source == "casme2":
                subject = f"sub{row.subject}"
            elif source == "samm":
                subject = str(int(row.subject))
            else:
                subject = row.subject
            rows.append([source, subject, row.expression, CDE_LABELS[row.emotion]])
    pd.DataFrame(rows, columns=["dataset", "subject", "filename", "label"]).to_csv(root / "cde_3class_labels.csv", index=False)


WRITERS = {"casme_sq": write_casme_sq, "samm_lv": write_samm_lv, "casme2": write_casme2, "samm": write_samm,
           "smic": write_smic, "smic_e": write_smic_e}


def _expected_frames(name: str, spec: dict) -> int:
    if name == "casme_sq":
        return spec["subjects"] * spec["videos"] * int(spec["seconds"] * 30)
    if name == "samm_lv":
        return spec["subjects"] * spec["videos"] * int(spec["seconds"] * 200)
    return spec["subjects"] * spec["clips"] * {"casme2": 100, "samm": 100, "smic": 60, "smic_e": spec.get("seconds", 0) * 100}[name]


def ensure_synthetic(profile: str | None = None, root: Path | None = None, seed: int | None = None,
                     datasets=DATASETS, force: bool = False) -> Path:
    """Generate the synthetic datasets of a profile where absent; return their root.

    Each dataset is written to a temporary folder ``.<name>.partial-<pid>`` and renamed into place when
    complete, with a ``mecore_synthetic.json`` stamp (profile, seed, sizes, generator version): an interrupted
    run leaves no half-written dataset, and the next call removes the temporary folder of a process that no
    longer runs (:func:`mecore.preprocess.cache.remove_stale`).

    A set already there is used as it is, whatever its seed, when ``seed`` is None (``load_dataset`` calls it
    so). It is rewritten, with a warning naming the folder and the reason, only when ``seed`` is given and
    differs from its stamp's, when ``force``, when its stamp is missing or incomplete, or when the generator
    version or the profile's sizes changed (then with the seed of its stamp unless ``seed`` is given). A new
    set gets ``seed`` (default 0). The CDE label file follows its three components.
    """
    profile_name = paths.data_profile(profile)
    root = Path(root) if root is not None else paths.synthetic_root(profile_name)
    root.mkdir(parents=True, exist_ok=True)
    from mecore.preprocess.cache import remove_stale

    remove_stale(root, STAGING)
    specs = PROFILES[profile_name]
    plans = {}
    for name in datasets:
        if name == "cde":
            continue  # decided after its components, below
        found = _stamp(root / name)
        wanted = _wanted_stamp(profile_name, name, specs, _seed_for(found, seed))
        reason = _regenerate_reason(root / name, found, wanted, force)
        if reason is not None:
            plans[name] = (wanted, reason)
    total = sum(_expected_frames(n, specs[n]) for n in plans)
    with tqdm(total=total, desc=f"synthetic datasets ({profile_name})", unit="frame", mininterval=1.0,
              disable=not plans) as progress:
        for name, (wanted, reason) in plans.items():
            _write_one(root, name, wanted, reason, specs, progress, force)
        if "cde" in datasets:
            found = _stamp(root / "cde")
            wanted = {**_wanted_stamp(profile_name, "cde", specs, _seed_for(found, seed)),
                      "components": {c: (_stamp(root / c) or {}).get("seed") for c in CDE_COMPONENTS}}
            reason = _regenerate_reason(root / "cde", found, wanted, force)
            if reason is None and (found.get("components", wanted["components"]) != wanted["components"]
                                   or set(plans) & set(CDE_COMPONENTS)):
                reason = "its components were regenerated (the label file follows them)"
            if reason is not None:
                _write_one(root, "cde", wanted, reason, specs, progress, force)
    return root


def _seed_for(found: dict | None, seed: int | None) -> int:
    """The seed a set is (re)written with: the one asked for, else the one of its stamp, else 0."""
    if seed is not None:
        return int(seed)
    if found and isinstance(found.get("seed"), int):
        return found["seed"]
    return 0


def _wanted_stamp(profile_name: str, name: str, specs: dict, seed: int) -> dict:
    return {"profile": profile_name, "seed": seed, "version": _GENERATOR_VERSION, "dataset": name,
            "spec": specs.get(name)}


def _regenerate_reason(folder: Path, found: dict | None, wanted: dict, force: bool) -> str | None:
    """Why the set in ``folder`` must be (re)written, or None when it is used as it is. A new set needs no
    warning; every other reason is said."""
    if force:
        return "regeneration was asked for (force)"
    if found is None:
        if not folder.exists():
            return ""
        return f"it has no readable {STAMP_NAME} (an interrupted or foreign set)"
    missing = [key for key in ("profile", "seed", "version", "dataset", "spec") if key not in found]
    if missing:
        return f"its stamp is incomplete (no {', '.join(missing)})"
    if found["version"] != wanted["version"]:
        return f"the generator changed (version {found['version']} -> {wanted['version']})"
    if found["spec"] != wanted["spec"] or found["profile"] != wanted["profile"] \
            or found["dataset"] != wanted["dataset"]:
        return (f"the profile's sizes changed ({found['profile']} {found['spec']} -> "
                f"{wanted['profile']} {wanted['spec']})")
    if found["seed"] != wanted["seed"]:
        return f"seed {wanted['seed']} was asked for; it holds seed {found['seed']}"
    return None


def _write_one(root: Path, name: str, stamp: dict, reason: str, specs: dict, progress, force: bool) -> None:
    """Write dataset ``name`` with ``stamp`` into ``root`` through a staging folder (see ensure_synthetic)."""
    target = root / name
    if reason:
        message = f"{target}: regenerating synthetic {name} with seed {stamp['seed']}: {reason}"
        warnings.warn(message, stacklevel=3)
        log.warning(message)
    progress.set_postfix_str(name)
    staging = root / f".{name}.partial-{os.getpid()}"  # one per process: concurrent runs never mix
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if name == "cde":
            write_cde(staging, root)
        else:
            WRITERS[name](staging, specs[name], stamp["seed"], progress)
        (staging / STAMP_NAME).write_text(json.dumps(stamp))
        if _stamp(target) == stamp and not force:
            return  # another process finished the same dataset first
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stamp(folder: Path) -> dict | None:
    """The stamp of the set in ``folder``, or None when it has none or it is unreadable."""
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None
