"""Synthetic faces that move like faces: the renderer behind the embedded synthetic datasets.

A subject is an :class:`Identity` (face shape, feature layout, skin tone, texture, hair). Its neutral
face is drawn once; every video frame is then that image *warped* by a displacement field, so
expressions are genuine local motion that optical flow can recover:

* action units (AUs) — each a sum of Gaussian displacement kernels on its facial region (brows,
  lids, cheeks, nose, lip corners, lips, chin), scaled by an onset -> apex -> offset intensity;
* head pose — a small similarity transform (drift, rotation, scale) applied on top;
* blinks — the upper lid drawn down over the eye (a distractor: real annotations exclude blinks);
* illumination — a global gain and a horizontal gradient that change slowly, plus sensor noise.

The drawing is simple (ellipses, lines, blur) but has the dark-eyes / bright-nose-bridge structure
that OpenCV's bundled frontal-face Haar cascade looks for; ``tests/test_synthetic.py`` checks that
the cascade finds exactly one face in the frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Face-unit coordinates: x across the face (-1 left edge .. 1 right edge, image left/right),
# y down the face (-1 top .. 1 chin). Kernels: (x, y, sigma, dx, dy); ``s`` mirrors for the side.
_SIDE = "s"
AU_KERNELS: dict[int, list[tuple]] = {
    1: [(("s", 0.18), "brow", 0.13, (0.0, -1.0))],
    2: [(("s", 0.58), "brow", 0.13, (0.0, -1.0))],
    4: [(("s", 0.30), "brow", 0.16, ("-s", 0.6)), (("s", 0.30), "brow", 0.16, (0.0, 0.8))],
    5: [(("s", "eye_x"), "lid_top", 0.08, (0.0, -1.0))],
    6: [(("s", 0.45), 0.22, 0.18, (0.0, -1.0)), (("s", "eye_x"), "lid_bottom", 0.08, (0.0, -0.6))],
    7: [(("s", "eye_x"), "lid_bottom", 0.08, (0.0, -1.0)), (("s", "eye_x"), "lid_top", 0.07, (0.0, 0.4))],
    9: [(("s", 0.13), 0.08, 0.11, (0.0, -1.0)), (("s", 0.18), "brow", 0.1, (0.0, 0.5))],
    10: [(("s", 0.12), "upper_lip", 0.12, (0.0, -1.0))],
    12: [(("s", "mouth_x"), "mouth", 0.12, ("s", -1.2))],
    14: [(("s", "mouth_x"), "mouth", 0.10, ("-s", -0.2))],
    15: [(("s", "mouth_x"), "mouth", 0.12, (0.0, 1.0))],
    17: [((1, 0.0), "chin", 0.2, (0.0, -1.0)), ((1, 0.0), "lower_lip", 0.1, (0.0, -0.6))],
    20: [(("s", "mouth_x"), "mouth", 0.12, ("s", 0.25))],
    23: [(("s", "mouth_x"), "mouth", 0.10, ("-s", 0.0))],
    24: [((1, 0.0), "upper_lip", 0.09, (0.0, 0.8)), ((1, 0.0), "lower_lip", 0.09, (0.0, -0.8))],
    25: [((1, 0.0), "lower_lip", 0.10, (0.0, 1.0))],
    26: [((1, 0.0), "chin", 0.30, (0.0, 1.0)), ((1, 0.0), "lower_lip", 0.12, (0.0, 0.8))],
}


def _color(bgr) -> tuple[float, float, float]:
    return tuple(float(c) for c in bgr)


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic subject look like themselves."""

    seed: int
    face_w: float  # half-width of the face ellipse, fraction of the frame
    face_h: float
    skin_bgr: tuple[float, float, float]
    hair_bgr: tuple[float, float, float]
    hair_depth: float  # how far the hairline comes down (face units)
    eye_x: float
    eye_y: float
    eye_w: float
    brow_gap: float
    brow_thick: float
    mouth_x: float  # half-width of the mouth (face units)
    mouth_y: float
    lip_bgr: tuple[float, float, float]
    texture: float  # strength of blotches and freckles

    @classmethod
    def sample(cls, seed: int) -> "Identity":
        rng = np.random.default_rng(seed)
        light, dark = np.array([175, 195, 230.0]), np.array([70, 95, 140.0])
        skin = light + (dark - light) * rng.uniform(0, 1)
        skin *= rng.uniform(0.95, 1.05, 3)
        return cls(
            seed=seed,
            face_w=rng.uniform(0.255, 0.30),
            face_h=rng.uniform(0.34, 0.39),
            skin_bgr=tuple(np.clip(skin, 40, 245)),
            hair_bgr=tuple(rng.uniform(15, 70) * rng.uniform(0.8, 1.2, 3)),
            hair_depth=rng.uniform(0.55, 0.8),
            eye_x=rng.uniform(0.34, 0.42),
            eye_y=rng.uniform(-0.16, -0.08),
            eye_w=rng.uniform(0.15, 0.19),
            brow_gap=rng.uniform(0.18, 0.24),
            brow_thick=rng.uniform(0.04, 0.065),
            mouth_x=rng.uniform(0.24, 0.33),
            mouth_y=rng.uniform(0.5, 0.6),
            lip_bgr=tuple(np.array([95, 95, 175.0]) * rng.uniform(0.8, 1.1, 3)),
            texture=rng.uniform(0.3, 1.0),
        )

    def anchor_y(self, name) -> float:
        """Named vertical positions in face units (numbers pass through)."""
        if not isinstance(name, str):
            return float(name)
        return {
            "brow": self.eye_y - self.brow_gap,
            "lid_top": self.eye_y - 0.05,
            "lid_bottom": self.eye_y + 0.06,
            "mouth": self.mouth_y,
            "upper_lip": self.mouth_y - 0.06,
            "lower_lip": self.mouth_y + 0.07,
            "chin": self.mouth_y + 0.28,
        }[name]


class FaceRenderer:
    """Renders frames of one subject at ``size`` x ``size`` pixels (BGR uint8)."""

    def __init__(self, identity: Identity, size: int, background_seed: int = 0):
        self.identity = identity
        self.size = size
        self.center = np.array([0.5 * size, 0.54 * size])
        self.axes = np.array([identity.face_w * size, identity.face_h * size])
        self.open_eyes = self._draw(eyes_open=True, background_seed=background_seed)
        self.closed_eyes = self._draw(eyes_open=False, background_seed=background_seed)
        self.eye_box = self._eye_regions()
        self._au_fields: dict[str, np.ndarray] = {}
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self._grid = np.stack([xx, yy], axis=-1)

    # ---- drawing -------------------------------------------------------------------------------
    def _draw(self, eyes_open: bool, background_seed: int) -> np.ndarray:
        """Draw the neutral face at twice the size, blur, then downsample (anti-aliasing)."""
        ident, scale = self.identity, 2
        big = self.size * scale
        rng = np.random.default_rng(ident.seed)
        back_rng = np.random.default_rng(10_000 + background_seed)
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        skin = np.array(ident.skin_bgr, np.float32)
        # a plain lab wall, lighter than the skin (as in the real recordings), with a gentle gradient
        wall = np.clip(skin.mean() + back_rng.uniform(45, 90) + back_rng.uniform(-12, 12, 3), 0, 235).astype(np.float32)
        img = np.empty((big, big, 3), np.float32)
        img[:] = wall + (yy / big * back_rng.uniform(-15, 15))[..., None]
        cx, cy = self.center * scale
        ax, ay = self.axes * scale

        def at(x, y):
            return int(round(cx + x * ax)), int(round(cy + y * ay))

        def length(v):
            return max(1, int(round(v * ax)))

        cv2.ellipse(img, at(0, -0.3), (int(ax * 1.1), int(ay * ident.hair_depth + ay * 0.2)), 0, 180, 360,
                    _color(ident.hair_bgr), -1)
        radius = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
        inside = (radius <= 1.0)[..., None]
        blotches = cv2.GaussianBlur(rng.normal(0, 1, (big, big)).astype(np.float32), (0, 0), big / 25)
        blotches *= 6 * ident.texture / (blotches.std() + 1e-6)
        shaded = skin * (1 - 0.35 * np.clip(radius, 0, 1) ** 3)[..., None] + blotches[..., None]
        img = np.where(inside, shaded, img)
        # hairline over the forehead
        cv2.ellipse(img, at(0, -0.62), (int(ax * 1.02), int(ay * (ident.hair_depth - 0.25))), 0, 180, 360,
                    _color(ident.hair_bgr), -1)
        for _ in range(int(40 * ident.texture)):  # freckles and pores
            x, y = rng.uniform(-0.7, 0.7), rng.uniform(-0.2, 0.8)
            cv2.circle(img, at(x, y), max(1, scale), _color(skin * 0.8), -1)
        for side in (-1, 1):  # eye sockets: the dark band the cascade looks for
            ex, ey = at(side * ident.eye_x, ident.eye_y)
            socket = np.exp(-(((xx - ex) / (ax * 0.24)) ** 2 + ((yy - ey) / (ay * 0.11)) ** 2))
            img *= (1 - 0.4 * socket)[..., None]
        for x, y, sx, sy in ((0, -0.05, 0.1, 0.3), (-0.42, 0.22, 0.18, 0.12), (0.42, 0.22, 0.18, 0.12)):
            hx, hy = at(x, y)  # light on the nose bridge and cheeks: bright between and below the eyes
            img *= (1 + 0.2 * np.exp(-(((xx - hx) / (ax * sx)) ** 2 + ((yy - hy) / (ay * sy)) ** 2)) * inside[..., 0])[..., None]
        for side in (-1, 1):
            eye = at(side * ident.eye_x, ident.eye_y)
            axes = (length(ident.eye_w), length(ident.eye_w * 0.42))
            if eyes_open:
                cv2.ellipse(img, eye, axes, 0, 0, 360, (232, 232, 232), -1)
                cv2.circle(img, eye, length(ident.eye_w * 0.4), (55, 45, 35), -1)
                cv2.circle(img, eye, length(ident.eye_w * 0.16), (15, 15, 15), -1)
                cv2.ellipse(img, eye, axes, 0, 180, 360, (35, 35, 45), 2 * scale)
            else:
                cv2.ellipse(img, eye, axes, 0, 0, 360, _color(skin * 0.82), -1)
                cv2.ellipse(img, eye, axes, 0, 10, 170, (35, 35, 45), 2 * scale)
            brow = at(side * ident.eye_x, ident.eye_y - ident.brow_gap)
            cv2.ellipse(img, brow, (length(0.21), length(0.06)), 0, 200, 340, (30, 30, 40), length(ident.brow_thick))
        cv2.line(img, at(-0.08, -0.02), at(-0.1, 0.25), _color(skin * 0.75), length(0.04))
        cv2.ellipse(img, at(0, 0.3), (length(0.14), length(0.05)), 0, 0, 180, _color(skin * 0.6), length(0.03))
        for side in (-1, 1):
            cv2.circle(img, at(side * 0.07, 0.3), length(0.025), (40, 40, 60), -1)
        cv2.ellipse(img, at(0, ident.mouth_y), (length(ident.mouth_x), length(0.08)), 0, 0, 360, _color(ident.lip_bgr), -1)
        cv2.line(img, at(-ident.mouth_x, ident.mouth_y), at(ident.mouth_x, ident.mouth_y), (40, 30, 60), length(0.02))
        img = cv2.GaussianBlur(img, (0, 0), 2.0)
        return cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def _eye_regions(self) -> list[tuple[int, int, int, int]]:
        """Pixel boxes (x0, y0, x1, y1) around each eye, for drawing the lid during a blink."""
        boxes = []
        ident = self.identity
        for side in (-1, 1):
            ex = self.center[0] + side * ident.eye_x * self.axes[0]
            ey = self.center[1] + ident.eye_y * self.axes[1]
            hw, hh = ident.eye_w * self.axes[0] * 1.25, ident.eye_w * 0.42 * self.axes[0] * 1.4
            boxes.append((int(ex - hw), int(ey - hh), int(np.ceil(ex + hw)), int(np.ceil(ey + hh))))
        return boxes

    # ---- motion --------------------------------------------------------------------------------
    def au_field(self, au: str) -> np.ndarray:
        """Displacement field (H, W, 2) of one action unit at unit intensity (max 1 pixel).

        ``au`` is ``"12"`` (both sides), ``"L12"`` or ``"R12"`` (one side of the image; L is the
        subject's left, which is the image's right).
        """
        if au not in self._au_fields:
            side_code, number = (au[0], int(au[1:])) if au[0] in "LR" else ("", int(au))
            if number not in AU_KERNELS:
                raise ValueError(f"action unit {au!r} has no motion model; known: {sorted(AU_KERNELS)}")
            sides = {"": (-1, 1), "L": (1,), "R": (-1,)}[side_code]
            field = np.zeros((self.size, self.size, 2), np.float32)
            for (mirror, x), y, sigma, (dx, dy) in AU_KERNELS[number]:
                for side in sides if mirror == _SIDE else (0,):
                    x_unit = getattr(self.identity, x) if isinstance(x, str) else x
                    cx = self.center[0] + (side if side else 1) * x_unit * self.axes[0]
                    cy = self.center[1] + self.identity.anchor_y(y) * self.axes[1]
                    sig = sigma * self.axes[0]
                    weight = np.exp(-(((self._grid[..., 0] - cx) ** 2 + (self._grid[..., 1] - cy) ** 2)
                                      / (2 * sig ** 2)))
                    vx = {"s": side, "-s": -side}.get(dx, dx) if isinstance(dx, str) else dx
                    field[..., 0] += weight * float(vx)
                    field[..., 1] += weight * float(dy)
            field /= max(float(np.linalg.norm(field, axis=-1).max()), 1e-6)
            self._au_fields[au] = field
        return self._au_fields[au]

    def frame(self, aus: dict[str, float], blink: float = 0.0, pose=(0.0, 0.0, 0.0, 1.0),
              gain: float = 1.0, gradient: float = 0.0, noise_sigma: float = 0.0,
              rng: np.random.Generator | None = None) -> np.ndarray:
        """One frame: AU displacements in pixels, blink closure in [0, 1], pose (tx, ty, deg, scale)."""
        base = self.open_eyes
        if blink > 0:
            base = base.copy()
            for x0, y0, x1, y1 in self.eye_box:
                lid = y0 + int(round(blink * (y1 - y0)))
                base[y0:lid, x0:x1] = self.closed_eyes[y0:lid, x0:x1]
        displacement = np.zeros((self.size, self.size, 2), np.float32)
        for au, pixels in aus.items():
            if pixels:
                displacement += pixels * self.au_field(au)
        tx, ty, degrees, scale = pose
        matrix = cv2.getRotationMatrix2D(tuple(map(float, self.center)), degrees, scale)
        matrix[:, 2] += (tx, ty)
        inverse = cv2.invertAffineTransform(matrix)
        source = (self._grid @ inverse[:, :2].T.astype(np.float32) + inverse[:, 2].astype(np.float32))
        if aus:  # content moves by the AU field, so output pixel p samples the face at p - d(p)
            source -= cv2.remap(displacement, source, None, cv2.INTER_LINEAR)
        img = cv2.remap(base, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if gain != 1.0 or gradient:
            ramp = 1 + gradient * (self._grid[..., 0] / self.size - 0.5)
            img = img * (gain * ramp)[..., None]
        if noise_sigma:
            img = img + (rng or np.random.default_rng()).normal(0, noise_sigma, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)
