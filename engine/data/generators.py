"""Deterministic 32×32 image generators for the demo zoo: 8 labelled tasks and a captioned pretraining pool.

Why generated: the zoo must be rebuilt offline on a 2-core CPU from a seed and a 1 MB npz of real
images (see real_images.py), so every image is drawn here, vectorised over a whole batch with
coordinate grids and masks (no per-pixel Python loops).

Design (docs/zoo.md says how it was arrived at):
- Pretraining images have flat grey backgrounds and no noise. Task images carry a domain shift:
  colour-gradient backgrounds and pixel noise (σ 0.07; faces σ 0.1; stripes σ 0.2 with half contrast
  and ±0.35 rad angle jitter; size and bars: paler gradients and no noise, see _MILD_SATURATION).
  The shift keeps zero-shot accuracy well below fine-tuned accuracy.
- Class prompts (`TaskArrays.templates` filled with class names) are exactly pretraining captions,
  e.g. "a small object", "two bars", "the digit 7", so zero-shot heads start above chance.
- Real-data sources are split by fixed index ranges, independent of the seed, so the pool and the
  tasks never share an image whatever seeds they are built with: pretraining sees digits 0..987
  (= the digits train split), LFW faces 0..19 and non-faces 100..119 (not in the faces task), and
  the top half of each texture at a coarser scale (the texture task crops the bottom half).
- Same seed → bit-identical tensors: every random draw comes from `np.random.default_rng` seeded
  with (seed, stream, task or family, split or chunk); no global RNG state is touched.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.data.real_images import TEXTURE_NAMES, RealImages

GENERATOR_VERSION = 2  # bump when any generated pixel changes: task caches are keyed by it
TASK_NAMES: tuple[str, ...] = ("digits", "faces", "textures", "size", "colours", "bars", "position", "stripes")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SIZE = 32
GENERATED_SPLIT_SIZES: Mapping[str, int] = MappingProxyType({"train": 2000, "val": 500, "test": 1000})
DIGIT_SPLITS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"train": (0, 988), "val": (988, 1293), "test": (1293, 1797)}
)
FACE_VIEWS = 4  # augmented views per held-out LFW image, so faces val has 32 × 4 = 128 images
# Per class (faces 0..99, non-faces 100..199): 0..19 go to pretraining, the rest is split 40/16/24.
_LFW_PRETRAIN_PER_CLASS = 20
_LFW_TASK_SPLITS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"train": (20, 60), "val": (60, 76), "test": (76, 100)}
)
# Texture row bands in the 512-row originals: pretraining uses rows 0..255 (coarser crops).
_TEXTURE_ROWS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"train": (256, 384), "val": (384, 448), "test": (448, 512)}
)

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
_COLOUR_RGB = (
    (0.90, 0.12, 0.10),
    (0.10, 0.72, 0.20),
    (0.15, 0.30, 0.95),
    (0.95, 0.87, 0.10),
    (0.62, 0.18, 0.82),
    (0.97, 0.97, 0.97),
)
SIZE_NAMES: tuple[str, ...] = ("small", "medium", "large")
_SIZE_BANDS = ((0.08, 0.11), (0.14, 0.17), (0.20, 0.24))  # object radius, fraction of the image side
POSITION_NAMES: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
_POSITION_XY = ((0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72), (0.5, 0.5))
BAR_CLASSES: tuple[str, ...] = ("one bar", "two bars", "three bars")
_BAR_SLOTS = (0.18, 0.34, 0.50, 0.66, 0.82)  # bar centres across the image
STRIPE_NAMES: tuple[str, ...] = ("horizontal", "vertical", "rising diagonal", "falling diagonal")
_STRIPE_ANGLES = (math.pi / 2, 0.0, math.pi / 4, -math.pi / 4)  # direction the intensity varies along
FACE_CLASSES: tuple[str, ...] = ("face", "background")

_TASK_NOISE = 0.07
# Size and bars get a milder shift: less colourful gradients and no pixel noise. Measured on the first
# full build's pretrained model (test zero-shot, size / bars): full style 0.335 / 0.335 (chance); colour
# saturation 0.25 with σ 0.07: 0.376 / 0.352; full colour with σ 0.015: 0.342 / 0.390; saturation 0.25
# without noise: 0.674 / 0.901. (Gradients and noise in pretraining instead lifted every other task's
# zero-shot to 0.95-1.0.)
_MILD_SATURATION = 0.25
_MILD_NOISE = 0.0
_TASK_STREAM, _POOL_STREAM = 1, 2  # keep task and pool random streams apart for equal seeds


@dataclass(frozen=True)
class TaskArrays:
    """One labelled task: uint8 images per split plus what a zero-shot head needs (names, prompts)."""

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]  # str.format templates with one "{}" for the class name
    images: dict[str, Tensor]  # split → [N, 3, 32, 32] uint8
    labels: dict[str, Tensor]  # split → [N] int64


@dataclass(frozen=True)
class PretrainPool:
    """Captioned images for contrastive pretraining; `captions[caption_ids[i]]` describes image i."""

    images: Tensor  # [n, 3, 32, 32] uint8
    caption_ids: Tensor  # [n] int64 into captions
    captions: tuple[str, ...]  # the unique captions used, in all_captions() order


# --------------------------------------------------------------------------------------------------
# Raster primitives


def _grid() -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in (0, 1): ys [1, 32, 1] and xs [1, 1, 32], to broadcast with [B, 1, 1]."""
    c = (torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5) / IMAGE_SIZE  # [32]
    return c.view(1, -1, 1), c.view(1, 1, -1)


def _col(values: np.ndarray) -> Tensor:
    """Per-image scalars [B] as a float32 tensor [B, 1, 1] that broadcasts against pixel grids."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).view(-1, 1, 1)


def _rgb(values: np.ndarray) -> Tensor:
    """Per-image colours [B, 3] as a float32 tensor [B, 3, 1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).view(-1, 3, 1, 1)


def _flat_grey(rng: np.random.Generator, b: int) -> tuple[Tensor, np.ndarray]:
    """Pretraining background: one grey level per image. Returns [B, 3, 32, 32] and the levels [B]."""
    level = rng.uniform(0.3, 0.7, b)
    return _rgb(np.repeat(level[:, None], 3, axis=1)).expand(b, 3, IMAGE_SIZE, IMAGE_SIZE), level


def _gradient(rng: np.random.Generator, b: int, *, saturation: float = 1.0) -> tuple[Tensor, np.ndarray]:
    """Task background: a linear gradient between two muted colours at a random angle.

    `saturation` < 1 pulls both colours toward their grey level (0: a grey gradient): a milder shift.
    Returns [B, 3, 32, 32] and each image's mean grey level [B] (to pick a contrasting ink).
    """
    c0, c1 = rng.uniform(0.25, 0.75, (b, 3)), rng.uniform(0.25, 0.75, (b, 3))
    c0 = c0.mean(axis=1, keepdims=True) + saturation * (c0 - c0.mean(axis=1, keepdims=True))  # [B, 3]
    c1 = c1.mean(axis=1, keepdims=True) + saturation * (c1 - c1.mean(axis=1, keepdims=True))  # [B, 3]
    angle = rng.uniform(0.0, 2 * math.pi, b)
    ys, xs = _grid()
    t = ((xs - 0.5) * _col(np.cos(angle)) + (ys - 0.5) * _col(np.sin(angle))) * 0.7071 + 0.5  # [B, 32, 32]
    bg = _rgb(c0) + _rgb(c1 - c0) * t.unsqueeze(1)  # [B, 3, 32, 32]
    return bg, (c0 + c1).mean(axis=1) / 2


def _ink(rng: np.random.Generator, level: np.ndarray) -> np.ndarray:
    """A near-black or near-white ink [B, 3] that contrasts with background grey levels [B]."""
    dark = rng.uniform(0.0, 0.15, level.shape)
    grey = np.where(level > 0.5, dark, 1.0 - dark)
    return np.clip(grey[:, None] + rng.uniform(-0.05, 0.05, (level.size, 3)), 0.0, 1.0)


def _palette(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """Named colours [B] → RGB [B, 3], jittered a little so a colour is a region, not one value."""
    base = np.asarray(_COLOUR_RGB)[colour]
    return np.clip(base + rng.uniform(-0.05, 0.05, base.shape), 0.0, 1.0)


def _paint(img: Tensor, alpha: Tensor, rgb: np.ndarray) -> Tensor:
    """Alpha-blend colours [B, 3] over img [B, 3, 32, 32] with coverage alpha [B, 32, 32]."""
    a = alpha.unsqueeze(1)  # [B, 1, 32, 32]
    return img * (1 - a) + _rgb(rgb) * a  # [B, 3, 32, 32]


def _grey_to_rgb(grey: Tensor) -> Tensor:
    """[B, 32, 32] → [B, 3, 32, 32] (a view)."""
    return grey.unsqueeze(1).expand(-1, 3, -1, -1)


def _noisy(img: Tensor, rng: np.random.Generator, sigma: float) -> Tensor:
    """Add Gaussian pixel noise (the task-side domain shift)."""
    noise = rng.standard_normal(tuple(img.shape), dtype=np.float32)  # [B, 3, 32, 32]
    return img + sigma * torch.from_numpy(noise)


def _to_uint8(img: Tensor) -> Tensor:
    """[B, 3, 32, 32] float in [0, 1] → uint8 (rounded, clamped)."""
    return img.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels in 0..k-1, as equal in count as possible, in random order: val accuracy stays comparable."""
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _sample_bilinear(src: Tensor, index: Tensor, ys: Tensor, xs: Tensor, *, zero_pad: bool) -> Tensor:
    """Bilinear lookup of src [M, H, W] at continuous coords ys, xs [B, 32, 32] in image index[B].

    Pixel k covers [k, k+1). Outside the image: 0 if zero_pad, else the nearest edge pixel.
    Why hand-made: images in one batch come from different sources, crops and sizes, which a
    single grid_sample over an expanded source would copy B times.
    """
    _, h, w = src.shape
    y, x = ys - 0.5, xs - 0.5
    y0, x0 = y.floor(), x.floor()
    wy, wx = y - y0, x - x0  # [B, 32, 32]
    flat, base = src.reshape(-1), (index.long() * (h * w)).view(-1, 1, 1)
    out = torch.zeros_like(wy)
    for dy, fy in ((0, 1 - wy), (1, wy)):
        for dx, fx in ((0, 1 - wx), (1, wx)):
            yi, xi = (y0 + dy).long(), (x0 + dx).long()
            value = flat[base + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)]  # [B, 32, 32]
            if zero_pad:
                value = value * ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))
            out = out + value * fy * fx
    return out


def _random_crops(
    src: Tensor,
    index: np.ndarray,
    rng: np.random.Generator,
    *,
    rows: tuple[int, int],
    sizes: tuple[float, float],
    flip: np.ndarray | None = None,
) -> Tensor:
    """Square crops of src [M, H, W] resampled to 32×32: sides in `sizes`, rows inside `rows`.

    Keeping each crop inside its row band is what keeps train/val/test texture sources disjoint.
    Returns [B, 32, 32]; flip (bool [B]) mirrors left-right, random when not given.
    """
    b, width = index.size, src.shape[2]
    side = rng.uniform(sizes[0], sizes[1], b)
    y0 = rows[0] + rng.uniform(0.0, 1.0, b) * (rows[1] - rows[0] - side)
    x0 = rng.uniform(0.0, 1.0, b) * (width - side)
    flip = rng.random(b) < 0.5 if flip is None else flip
    ys, xs = _grid()
    gx = torch.where(_col(flip) > 0, 1 - xs, xs)  # [B, 1, 32]
    sy, sx = _col(y0) + _col(side) * ys, _col(x0) + _col(side) * gx  # [B, 32, 1], [B, 1, 32]
    shape = (b, IMAGE_SIZE, IMAGE_SIZE)
    return _sample_bilinear(src, torch.from_numpy(index), sy.expand(shape), sx.expand(shape), zero_pad=False)


# --------------------------------------------------------------------------------------------------
# Shapes and scenes (size, colours, position tasks and the scene captions)


def _sdf_circle(u: Tensor, v: Tensor) -> Tensor:
    return torch.sqrt(u * u + v * v) - 1.0


def _sdf_square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.85


def _sdf_triangle(u: Tensor, v: Tensor) -> Tensor:
    """Upright equilateral triangle, inradius 0.62, shifted so its height is centred on the origin."""
    v = v - 0.31
    edges = (v, -0.866 * u - 0.5 * v, 0.866 * u - 0.5 * v)
    return torch.maximum(torch.maximum(edges[0], edges[1]), edges[2]) - 0.62


def _sdf_cross(u: Tensor, v: Tensor) -> Tensor:
    arm_u = torch.maximum(u.abs() - 1.0, v.abs() - 0.3)
    arm_v = torch.maximum(v.abs() - 1.0, u.abs() - 0.3)
    return torch.minimum(arm_u, arm_v)


_SHAPE_SDF: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (_sdf_circle, _sdf_square, _sdf_triangle, _sdf_cross)


@dataclass(frozen=True)
class _Scene:
    """One object per image; every field is a numpy array [B]."""

    shape: np.ndarray
    colour: np.ndarray
    radius: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray


def _sample_scene(rng: np.random.Generator, radius: np.ndarray, *, pos: np.ndarray | None) -> _Scene:
    """Random shape, colour and tilt; the centre is a jittered anchor of `pos`, or anywhere if None."""
    b = radius.size
    shape, colour = rng.integers(0, len(SHAPE_NAMES), b), rng.integers(0, len(COLOUR_NAMES), b)
    angle = rng.uniform(-0.4, 0.4, b)
    if pos is None:
        cx = rng.uniform(radius + 0.03, 1 - radius - 0.03)
        cy = rng.uniform(radius + 0.03, 1 - radius - 0.03)
    else:
        anchor = np.asarray(_POSITION_XY)[pos]  # [B, 2]
        cx = np.clip(anchor[:, 0] + rng.uniform(-0.05, 0.05, b), radius, 1 - radius)
        cy = np.clip(anchor[:, 1] + rng.uniform(-0.05, 0.05, b), radius, 1 - radius)
    return _Scene(shape=shape, colour=colour, radius=radius, cx=cx, cy=cy, angle=angle)


def _size_radius(rng: np.random.Generator, size: np.ndarray) -> np.ndarray:
    """Size classes [B] → radii drawn inside each class's band (gaps between bands keep labels clean)."""
    band = np.asarray(_SIZE_BANDS)[size]  # [B, 2]
    return rng.uniform(band[:, 0], band[:, 1])


def _shape_alpha(scene: _Scene) -> Tensor:
    """Anti-aliased coverage [B, 32, 32] of each image's shape, via signed distances in radius units."""
    ys, xs = _grid()
    dx, dy = xs - _col(scene.cx), ys - _col(scene.cy)  # [B, 1, 32], [B, 32, 1]
    cos, sin, r = _col(np.cos(scene.angle)), _col(np.sin(scene.angle)), _col(scene.radius)
    u, v = (dx * cos + dy * sin) / r, (dy * cos - dx * sin) / r  # [B, 32, 32]
    dist = torch.empty_like(u)
    for kind, sdf in enumerate(_SHAPE_SDF):
        sel = torch.from_numpy(np.flatnonzero(scene.shape == kind))
        if sel.numel():
            dist[sel] = sdf(u[sel], v[sel])
    return (0.5 - dist * r * IMAGE_SIZE).clamp(0.0, 1.0)


def _draw_scene(bg: Tensor, scene: _Scene, rng: np.random.Generator) -> Tensor:
    """Paint the scene's object over bg [B, 3, 32, 32]."""
    return _paint(bg, _shape_alpha(scene), _palette(rng, scene.colour))


# --------------------------------------------------------------------------------------------------
# Bars and stripes


def _bars_alpha(rng: np.random.Generator, count: np.ndarray, vertical: np.ndarray) -> Tensor:
    """count[B] (1..3) thin parallel bars on distinct slots of 5; coverage [B, 32, 32]."""
    b = count.size
    rank = np.argsort(rng.random((b, len(_BAR_SLOTS))), axis=1).argsort(axis=1)
    on = torch.from_numpy((rank < count[:, None]).astype(np.float32))  # [B, 5]
    shift, half_thick = _col(rng.uniform(-0.03, 0.03, b)), _col(rng.uniform(0.055, 0.08, b) / 2)
    half_len, mid = _col(rng.uniform(0.25, 0.4, b)), _col(rng.uniform(0.42, 0.58, b))
    ys, xs = _grid()
    vert = _col(vertical) > 0
    across, along = torch.where(vert, xs, ys), torch.where(vert, ys, xs)  # [B, 32, 32]
    along_out = (along - mid).abs() - half_len
    alpha = torch.zeros(b, IMAGE_SIZE, IMAGE_SIZE)
    for k, centre in enumerate(_BAR_SLOTS):
        dist = torch.maximum((across - centre - shift).abs() - half_thick, along_out) * IMAGE_SIZE
        alpha = torch.maximum(alpha, (0.5 - dist).clamp(0.0, 1.0) * on[:, k].view(-1, 1, 1))
    return alpha


def _stripe_pattern(rng: np.random.Generator, orient: np.ndarray, *, jitter: float) -> Tensor:
    """Sinusoidal stripes in [0, 1], [B, 32, 32]: 4 to 8 periods per image, random phase."""
    b = orient.size
    theta = np.asarray(_STRIPE_ANGLES)[orient] + rng.uniform(-jitter, jitter, b)
    freq, phase = rng.uniform(4.0, 8.0, b), rng.uniform(0.0, 2 * math.pi, b)
    ys, xs = _grid()
    proj = xs * _col(np.cos(theta)) + ys * _col(np.sin(theta))  # [B, 32, 32]
    return 0.5 + 0.5 * torch.sin(2 * math.pi * _col(freq) * proj + _col(phase))


# --------------------------------------------------------------------------------------------------
# Digits: scans from load_digits and stroke glyphs


def _arc(cx: float, cy: float, rx: float, ry: float, deg0: float, deg1: float, n: int) -> tuple:
    """Polyline points along an ellipse (y points down, so increasing angle turns clockwise)."""
    t = np.radians(np.linspace(deg0, deg1, n + 1))
    return tuple((float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))) for a in t)


# Digit glyphs as polylines in a unit box (x right, y down); drawn with random affine and thickness.
_DIGIT_STROKES: tuple[tuple[tuple[tuple[float, float], ...], ...], ...] = (
    (_arc(0.5, 0.5, 0.42, 0.48, 0, 360, 10),),
    (((0.22, 0.22), (0.55, 0.0), (0.55, 1.0)),),
    (_arc(0.5, 0.3, 0.4, 0.3, 180, 380, 6) + ((0.08, 1.0), (0.95, 1.0)),),
    (_arc(0.5, 0.27, 0.38, 0.25, 200, 450, 5), _arc(0.5, 0.75, 0.42, 0.25, 270, 520, 5)),
    (((0.7, 1.0), (0.7, 0.0), (0.05, 0.68), (0.95, 0.68)),),
    (((0.88, 0.0), (0.2, 0.0), (0.15, 0.45)) + _arc(0.5, 0.7, 0.4, 0.3, 220, 500, 7),),
    (((0.78, 0.0), (0.4, 0.2), (0.15, 0.55)) + _arc(0.5, 0.7, 0.37, 0.3, 180, 540, 8),),
    (((0.08, 0.0), (0.92, 0.0), (0.4, 1.0)),),
    (_arc(0.5, 0.25, 0.32, 0.25, 0, 360, 8), _arc(0.5, 0.73, 0.4, 0.27, 0, 360, 8)),
    (_arc(0.5, 0.3, 0.37, 0.3, 0, 360, 8) + ((0.8, 0.65), (0.45, 1.0)),),
)


def _digit_segments() -> np.ndarray:
    """[10, S, 4] segments (x0, y0, x1, y1) per digit, padded by repeating the last one."""
    per_digit = [[a + b for line in strokes for a, b in zip(line[:-1], line[1:])] for strokes in _DIGIT_STROKES]
    longest = max(len(segs) for segs in per_digit)
    return np.asarray([segs + [segs[-1]] * (longest - len(segs)) for segs in per_digit], dtype=np.float32)


def _stroke_digit_alpha(rng: np.random.Generator, digit: np.ndarray) -> Tensor:
    """Stroke glyphs with random size, slant, tilt and pen width; half blurred through 8×8 like load_digits."""
    b = digit.size
    seg = _digit_segments()[digit]  # [B, S, 4]
    height = rng.uniform(0.5, 0.72, b)[:, None, None]
    gx = (seg[..., 0::2] - 0.5) * height * rng.uniform(0.5, 0.7, b)[:, None, None]  # [B, S, 2]
    gy = (seg[..., 1::2] - 0.5) * height
    gx = gx - rng.uniform(-0.25, 0.25, b)[:, None, None] * gy  # slant
    ang = rng.uniform(-0.2, 0.2, b)[:, None, None]
    x = 0.5 + rng.uniform(-0.08, 0.08, b)[:, None, None] + gx * np.cos(ang) - gy * np.sin(ang)
    y = 0.5 + rng.uniform(-0.08, 0.08, b)[:, None, None] + gx * np.sin(ang) + gy * np.cos(ang)
    dist = _polyline_distance(x, y) * IMAGE_SIZE  # [B, 32, 32] in pixels
    alpha = (_col(rng.uniform(0.7, 1.5, b)) + 0.5 - dist).clamp(0.0, 1.0)
    blurred = F.interpolate(
        F.avg_pool2d(alpha.unsqueeze(1), 4), size=IMAGE_SIZE, mode="bilinear", align_corners=False
    ).squeeze(1)  # [B, 32, 32]
    return torch.where(_col(rng.random(b) < 0.5) > 0, blurred * 1.3, alpha).clamp(0.0, 1.0)


def _polyline_distance(x: np.ndarray, y: np.ndarray) -> Tensor:
    """Distance [B, 32, 32] from each pixel centre to the nearest segment; x, y [B, S, 2] endpoints."""
    ys, xs = _grid()
    best = torch.full((x.shape[0], IMAGE_SIZE, IMAGE_SIZE), float("inf"))
    for s in range(x.shape[1]):
        x0, y0, x1, y1 = _col(x[:, s, 0]), _col(y[:, s, 0]), _col(x[:, s, 1]), _col(y[:, s, 1])
        dx, dy = x1 - x0, y1 - y0
        t = (((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy).clamp_min(1e-8)).clamp(0.0, 1.0)
        best = torch.minimum(best, torch.hypot(xs - x0 - t * dx, ys - y0 - t * dy))
    return best


def _scan_digit_alpha(scans: Tensor, index: np.ndarray, rng: np.random.Generator | None) -> Tensor:
    """load_digits ink [M, 8, 8] in [0, 1] upsampled to [B, 32, 32]; random affine if rng is given."""
    b = index.size
    scale, angle, sx, sy = np.ones(b), np.zeros(b), np.zeros(b), np.zeros(b)
    if rng is not None:
        scale, angle = rng.uniform(0.8, 1.1, b), rng.uniform(-0.25, 0.25, b)
        sx, sy = rng.uniform(-0.08, 0.08, b), rng.uniform(-0.08, 0.08, b)
    ys, xs = _grid()
    u, v = (xs - 0.5 - _col(sx)) / _col(scale), (ys - 0.5 - _col(sy)) / _col(scale)  # [B, 1, 32], [B, 32, 1]
    cos, sin = _col(np.cos(angle)), _col(np.sin(angle))
    src_x, src_y = (u * cos + v * sin + 0.5) * 8, (v * cos - u * sin + 0.5) * 8  # [B, 32, 32]
    return _sample_bilinear(scans, torch.from_numpy(index), src_y, src_x, zero_pad=True)


# --------------------------------------------------------------------------------------------------
# Task builders: (real, rng, split) → (float images [N, 3, 32, 32] in [0, 1], labels [N] int64)


def _build_digits(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """load_digits scans in index order (split 988/305/504), bilinear 8→32, ink on a gradient + noise."""
    lo, hi = DIGIT_SPLITS[split]
    scans = torch.from_numpy(real.digits[lo:hi].astype(np.float32) / 16.0)  # [N, 8, 8]
    alpha = _scan_digit_alpha(scans, np.arange(hi - lo), None)  # [N, 32, 32]
    bg, level = _gradient(rng, hi - lo)
    img = _paint(bg, alpha, _ink(rng, level))
    return _noisy(img, rng, _TASK_NOISE), real.digit_labels[lo:hi].astype(np.int64)


def _lfw_task_index(real: RealImages, split: str) -> np.ndarray:
    """LFW indices of this split's held-out faces and non-faces (never in pretraining)."""
    lo, hi = _LFW_TASK_SPLITS[split]
    faces, others = np.flatnonzero(real.lfw_is_face), np.flatnonzero(real.lfw_is_face == 0)
    return np.concatenate([faces[lo:hi], others[lo:hi]])


def _build_faces(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """FACE_VIEWS crops per held-out LFW image (even views unflipped, odd flipped), σ 0.1 noise.

    Why views: only 160 LFW images are left for the task (40 went to pretraining), yet every val
    split needs ≥ 128 images; each split still uses its own disjoint source images.
    Split sources 80/32/48 → images 320/128/192.
    """
    index = np.repeat(_lfw_task_index(real, split), FACE_VIEWS)  # [N]
    flip = np.tile(np.arange(FACE_VIEWS) % 2 == 1, index.size // FACE_VIEWS)
    lfw = torch.from_numpy(real.lfw.astype(np.float32) / 255.0)  # [200, 25, 25]
    grey = _random_crops(lfw, index, rng, rows=(0, 25), sizes=(21.0, 25.0), flip=flip)  # [N, 32, 32]
    labels = np.where(real.lfw_is_face[index] == 1, 0, 1).astype(np.int64)  # 0 face, 1 background
    return _noisy(_grey_to_rgb(grey), rng, 0.1), labels


def _build_textures(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """Crops of 40–64 px from this split's row band, tinted by a gradient (25 %) + noise."""
    labels = _balanced_labels(rng, GENERATED_SPLIT_SIZES[split], len(TEXTURE_NAMES))
    tex = torch.from_numpy(real.textures.astype(np.float32) / 255.0)  # [3, 512, 512]
    grey = _random_crops(tex, labels, rng, rows=_TEXTURE_ROWS[split], sizes=(40.0, 64.0))  # [N, 32, 32]
    bg, _ = _gradient(rng, labels.size)
    return _noisy(0.75 * _grey_to_rgb(grey) + 0.25 * bg, rng, _TASK_NOISE), labels


def _build_size(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """One object anywhere; label = radius band small/medium/large."""
    labels = _balanced_labels(rng, GENERATED_SPLIT_SIZES[split], len(SIZE_NAMES))
    scene = _sample_scene(rng, _size_radius(rng, labels), pos=None)
    return _scene_task_image(rng, scene, noise=_MILD_NOISE, saturation=_MILD_SATURATION), labels


def _build_colours(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """One object of any size (radius 0.10–0.22) anywhere; label = its colour."""
    n = GENERATED_SPLIT_SIZES[split]
    labels = _balanced_labels(rng, n, len(COLOUR_NAMES))
    scene = replace(_sample_scene(rng, rng.uniform(0.10, 0.22, n), pos=None), colour=labels)
    return _scene_task_image(rng, scene), labels


def _build_position(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """One object (radius 0.09–0.16) near one of 5 anchors; label = the anchor."""
    n = GENERATED_SPLIT_SIZES[split]
    labels = _balanced_labels(rng, n, len(POSITION_NAMES))
    scene = _sample_scene(rng, rng.uniform(0.09, 0.16, n), pos=labels)
    return _scene_task_image(rng, scene), labels


def _scene_task_image(
    rng: np.random.Generator, scene: _Scene, *, noise: float = _TASK_NOISE, saturation: float = 1.0
) -> Tensor:
    """Task style for scenes: gradient background, object, pixel noise σ `noise`."""
    bg, _ = _gradient(rng, scene.radius.size, saturation=saturation)
    return _noisy(_draw_scene(bg, scene, rng), rng, noise)


def _build_bars(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """1–3 thin bars of one colour, all vertical or all horizontal; label = count − 1."""
    n = GENERATED_SPLIT_SIZES[split]
    labels = _balanced_labels(rng, n, len(BAR_CLASSES))
    alpha = _bars_alpha(rng, labels + 1, rng.random(n) < 0.5)
    bg, _ = _gradient(rng, n, saturation=_MILD_SATURATION)
    img = _paint(bg, alpha, _palette(rng, rng.integers(0, len(COLOUR_NAMES), n)))
    return _noisy(img, rng, _MILD_NOISE), labels


def _build_stripes(real: RealImages, rng: np.random.Generator, split: str) -> tuple[Tensor, np.ndarray]:
    """Stripes at half the pretraining contrast over a gradient, ±0.35 rad jitter, σ 0.2 noise.

    Why so hard: with pretraining-like stripes the zero-shot score sat near 100 % in the zoo's prototype.
    """
    n = GENERATED_SPLIT_SIZES[split]
    labels = _balanced_labels(rng, n, len(STRIPE_NAMES))
    pattern = _stripe_pattern(rng, labels, jitter=0.35)  # [N, 32, 32]
    bg, level = _gradient(rng, n)
    img = _paint(bg, 0.5 * pattern, _ink(rng, level))
    return _noisy(img, rng, 0.2), labels


_Builder = Callable[[RealImages, np.random.Generator, str], tuple[Tensor, np.ndarray]]


@dataclass(frozen=True)
class _TaskSpec:
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    build: _Builder


_TASKS: Mapping[str, _TaskSpec] = MappingProxyType(
    {
        "digits": _TaskSpec(tuple("0123456789"), ("the digit {}", "the number {}", "a {}"), _build_digits),
        "faces": _TaskSpec(FACE_CLASSES, ("a photo of a {}",), _build_faces),
        "textures": _TaskSpec(TEXTURE_NAMES, ("a photo of {}", "a {} texture"), _build_textures),
        "size": _TaskSpec(SIZE_NAMES, ("a {} object",), _build_size),
        "colours": _TaskSpec(COLOUR_NAMES, ("a {} object",), _build_colours),
        "bars": _TaskSpec(BAR_CLASSES, ("{}",), _build_bars),
        "position": _TaskSpec(POSITION_NAMES, ("an object in the {}",), _build_position),
        "stripes": _TaskSpec(STRIPE_NAMES, ("{} stripes",), _build_stripes),
    }
)


def build_task(name: str, *, real: RealImages, seed: int) -> TaskArrays:
    """Build task `name` (one of TASK_NAMES): train/val/test uint8 images and int64 labels.

    Split sizes: digits 988/305/504 (load_digits order); faces 320/128/192 (80/32/48 LFW images ×
    FACE_VIEWS); all others 2000/500/1000. Each split has its own random stream, so changing one
    split's generator never moves another's images.
    """
    if name not in _TASKS:
        raise KeyError(f"unknown zoo task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    _check_seed(seed)
    spec, images, labels = _TASKS[name], {}, {}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, _TASK_STREAM, TASK_NAMES.index(name), split_index])
        img, lab = spec.build(real, rng, split)
        images[split] = _to_uint8(img)  # [N, 3, 32, 32] uint8
        labels[split] = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int64))  # [N]
    return TaskArrays(name=name, class_names=spec.class_names, templates=spec.templates, images=images, labels=labels)


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


# --------------------------------------------------------------------------------------------------
# Pretraining pool: caption families


@dataclass(frozen=True)
class _Caption:
    text: str  # str.format with named slots
    slots: tuple[str, ...]  # slot names in _SLOT_WORDS, in id (mixed-radix) order


_SLOT_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "shape": SHAPE_NAMES,
        "colour": COLOUR_NAMES,
        "size": SIZE_NAMES,
        "pos": POSITION_NAMES,
        "count": ("one", "two", "three"),
        "orient": ("vertical", "horizontal"),
        "stripes": STRIPE_NAMES,
        "digit": tuple("0123456789"),
        "texture": TEXTURE_NAMES,
        "photo": FACE_CLASSES,
    }
)
_FAMILY_CAPTIONS: Mapping[str, tuple[_Caption, ...]] = MappingProxyType(
    {
        "scene": (
            _Caption("a {shape}", ("shape",)),
            _Caption("a {colour} {shape}", ("colour", "shape")),
            _Caption("a {colour} object", ("colour",)),
            _Caption("a {size} object", ("size",)),
            _Caption("a {size} {shape}", ("size", "shape")),
            _Caption("an object in the {pos}", ("pos",)),
            _Caption("a {shape} in the {pos}", ("shape", "pos")),
            _Caption("a {colour} {shape} in the {pos}", ("colour", "shape", "pos")),
            _Caption("a {size} {colour} {shape} in the {pos}", ("size", "colour", "shape", "pos")),
        ),
        "bars": (
            _Caption("{count} bars", ("count",)),
            _Caption("{count} {colour} bars", ("count", "colour")),
            _Caption("{count} {orient} bars", ("count", "orient")),
        ),
        "stripes": (_Caption("{stripes} stripes", ("stripes",)),),
        "digits": (
            _Caption("the digit {digit}", ("digit",)),
            _Caption("the number {digit}", ("digit",)),
            _Caption("a {digit}", ("digit",)),
        ),
        "textures": (_Caption("a photo of {texture}", ("texture",)), _Caption("a {texture} texture", ("texture",))),
        "photos": (_Caption("a photo of a {photo}", ("photo",)),),
    }
)
# Share of the pool per family; scenes feed three tasks (size, colours, position).
_FAMILY_SHARE: Mapping[str, float] = MappingProxyType(
    {"scene": 0.40, "bars": 0.14, "stripes": 0.08, "digits": 0.20, "textures": 0.10, "photos": 0.08}
)
_CHUNK = 4096  # images generated at once: bounds peak memory at a few hundred MB


def _caption_text(caption: _Caption, words: tuple[str, ...]) -> str:
    text = caption.text.format(**dict(zip(caption.slots, words)))
    return text[:-1] if words[:1] == ("one",) and text.endswith(" bars") else text  # "one bar"


def all_captions() -> tuple[str, ...]:
    """Every caption the pool can produce, in global-id order (family, template, slot words)."""
    return tuple(
        _caption_text(caption, words)
        for captions in _FAMILY_CAPTIONS.values()
        for caption in captions
        for words in itertools.product(*(_SLOT_WORDS[s] for s in caption.slots))
    )


def _caption_offsets(family: str) -> tuple[int, ...]:
    """Global id of the first caption of each of the family's templates."""
    start, offsets = 0, {}
    for fam, captions in _FAMILY_CAPTIONS.items():
        for t, caption in enumerate(captions):
            offsets[fam, t] = start
            start += math.prod(len(_SLOT_WORDS[s]) for s in caption.slots)
    return tuple(offsets[family, t] for t in range(len(_FAMILY_CAPTIONS[family])))


def _caption_ids(family: str, rng: np.random.Generator, attrs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Pick a template per image uniformly and turn its true attributes into global caption ids [B]."""
    captions, offsets = _FAMILY_CAPTIONS[family], _caption_offsets(family)
    b = next(iter(attrs.values())).size
    choice, ids = rng.integers(0, len(captions), b), np.empty(b, dtype=np.int64)
    for t, caption in enumerate(captions):
        sel = choice == t
        dims = tuple(len(_SLOT_WORDS[s]) for s in caption.slots)
        ids[sel] = offsets[t] + np.ravel_multi_index(tuple(attrs[s][sel] for s in caption.slots), dims)
    return ids


# --------------------------------------------------------------------------------------------------
# Pretraining pool: family generators (flat grey backgrounds, no noise)


@dataclass(frozen=True)
class _PoolSources:
    """Real images the pool may use, already float and disjoint from the tasks' val/test data."""

    scans: Tensor  # [988, 8, 8] ink in [0, 1]: the digits train split
    scan_labels: np.ndarray  # [988]
    photos: Tensor  # [40, 25, 25]: LFW faces 0..19 and non-faces 100..119
    photo_class: np.ndarray  # [40] 0 face, 1 background
    textures: Tensor  # [3, 64, 128]: top half of each texture, 4× area-downsampled


def _pool_sources(real: RealImages) -> _PoolSources:
    lo, hi = DIGIT_SPLITS["train"]
    faces, others = np.flatnonzero(real.lfw_is_face), np.flatnonzero(real.lfw_is_face == 0)
    photo_index = np.concatenate([faces[:_LFW_PRETRAIN_PER_CLASS], others[:_LFW_PRETRAIN_PER_CLASS]])
    tex = torch.from_numpy(real.textures[:, :256].astype(np.float32) / 255.0)  # [3, 256, 512]
    return _PoolSources(
        scans=torch.from_numpy(real.digits[lo:hi].astype(np.float32) / 16.0),
        scan_labels=real.digit_labels[lo:hi].astype(np.int64),
        photos=torch.from_numpy(real.lfw[photo_index].astype(np.float32) / 255.0),
        photo_class=np.where(real.lfw_is_face[photo_index] == 1, 0, 1),
        textures=F.avg_pool2d(tex.unsqueeze(1), 4).squeeze(1),
    )  # [3, 64, 128]


def _pool_scene(rng: np.random.Generator, b: int, src: _PoolSources) -> tuple[Tensor, dict[str, np.ndarray]]:
    """An object at one of 5 anchors in one of 3 size bands, so every scene caption is true."""
    size, pos = rng.integers(0, len(SIZE_NAMES), b), rng.integers(0, len(POSITION_NAMES), b)
    scene = _sample_scene(rng, _size_radius(rng, size), pos=pos)
    bg, _ = _flat_grey(rng, b)
    attrs = {"shape": scene.shape, "colour": scene.colour, "size": size, "pos": pos}
    return _draw_scene(bg, scene, rng), attrs


def _pool_bars(rng: np.random.Generator, b: int, src: _PoolSources) -> tuple[Tensor, dict[str, np.ndarray]]:
    count, orient = rng.integers(0, 3, b), rng.integers(0, 2, b)  # orient 0 vertical, 1 horizontal
    colour = rng.integers(0, len(COLOUR_NAMES), b)
    bg, _ = _flat_grey(rng, b)
    img = _paint(bg, _bars_alpha(rng, count + 1, orient == 0), _palette(rng, colour))
    return img, {"count": count, "orient": orient, "colour": colour}


def _pool_stripes(rng: np.random.Generator, b: int, src: _PoolSources) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Full-contrast stripes between a dark and a light tinted colour, ±0.1 rad jitter."""
    orient = rng.integers(0, len(STRIPE_NAMES), b)
    pattern = _stripe_pattern(rng, orient, jitter=0.1)  # [B, 32, 32]
    dark = rng.uniform(0.05, 0.35, (b, 1)) + rng.uniform(-0.12, 0.12, (b, 3))
    light = rng.uniform(0.65, 0.95, (b, 1)) + rng.uniform(-0.12, 0.12, (b, 3))
    base = _rgb(np.clip(dark, 0, 1)).expand(b, 3, IMAGE_SIZE, IMAGE_SIZE)
    return _paint(base, pattern, np.clip(light, 0, 1)), {"stripes": orient}


def _pool_digits(rng: np.random.Generator, b: int, src: _PoolSources) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Half load_digits train scans under a random affine, half stroke glyphs; contrasting grey ink."""
    scan = rng.random(b) < 0.5
    pick = rng.integers(0, src.scan_labels.size, b)
    digit = np.where(scan, src.scan_labels[pick], rng.integers(0, 10, b))
    alpha = torch.empty(b, IMAGE_SIZE, IMAGE_SIZE)
    which_scan, which_stroke = np.flatnonzero(scan), np.flatnonzero(~scan)
    alpha[torch.from_numpy(which_scan)] = _scan_digit_alpha(src.scans, pick[which_scan], rng)
    alpha[torch.from_numpy(which_stroke)] = _stroke_digit_alpha(rng, digit[which_stroke])
    bg, level = _flat_grey(rng, b)
    return _paint(bg, alpha, _ink(rng, level)), {"digit": digit}


def _pool_textures(rng: np.random.Generator, b: int, src: _PoolSources) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Coarse crops (100–200 px of the original, i.e. 25–50 px at 4× down) from the top half, grey."""
    texture = rng.integers(0, len(TEXTURE_NAMES), b)
    grey = _random_crops(src.textures, texture, rng, rows=(0, src.textures.shape[1]), sizes=(25.0, 50.0))
    return _grey_to_rgb(grey), {"texture": texture}


def _pool_photos(rng: np.random.Generator, b: int, src: _PoolSources) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Random crops and flips of the 40 pretraining LFW images: "a photo of a face / background"."""
    pick = rng.integers(0, src.photo_class.size, b)
    grey = _random_crops(src.photos, pick, rng, rows=(0, 25), sizes=(18.0, 25.0))  # [B, 32, 32]
    return _grey_to_rgb(grey), {"photo": src.photo_class[pick]}


_FamilyGen = Callable[[np.random.Generator, int, _PoolSources], tuple[Tensor, dict[str, np.ndarray]]]
_FAMILY_GEN: Mapping[str, _FamilyGen] = MappingProxyType(
    {
        "scene": _pool_scene,
        "bars": _pool_bars,
        "stripes": _pool_stripes,
        "digits": _pool_digits,
        "textures": _pool_textures,
        "photos": _pool_photos,
    }
)


def _family_counts(n: int) -> dict[str, int]:
    """Split n over the families by share, largest remainders first, so the counts sum to n."""
    exact = np.asarray(list(_FAMILY_SHARE.values())) * n
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return {family: int(c) for family, c in zip(_FAMILY_SHARE, counts)}


def pretrain_pool(n: int, *, real: RealImages, seed: int) -> PretrainPool:
    """n captioned pretraining images, shuffled; families and captions as in docs/zoo.md.

    Families (share): scenes 40 %, bars 14 %, stripes 8 %, digits 20 %, textures 10 %, LFW photos 8 %.
    Each chunk of each family has its own random stream, then a seeded permutation mixes them.
    """
    if n < 1:
        raise ValueError(f"pool size n must be ≥ 1, got {n}")
    _check_seed(seed)
    src, order = _pool_sources(real), np.random.default_rng([seed, _POOL_STREAM]).permutation(n)
    images = torch.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)  # [n, 3, 32, 32]
    global_ids, start = np.empty(n, dtype=np.int64), 0
    for family_index, (family, count) in enumerate(_family_counts(n).items()):
        for chunk, lo in enumerate(range(0, count, _CHUNK)):
            b = min(_CHUNK, count - lo)
            rng = np.random.default_rng([seed, _POOL_STREAM, family_index, chunk])
            img, attrs = _FAMILY_GEN[family](rng, b, src)
            where = order[start + lo : start + lo + b]
            images[torch.from_numpy(where)] = _to_uint8(img)
            global_ids[where] = _caption_ids(family, rng, attrs)
        start += count
    used, caption_ids = np.unique(global_ids, return_inverse=True)
    every = all_captions()
    return PretrainPool(
        images=images,
        caption_ids=torch.from_numpy(caption_ids.astype(np.int64)),
        captions=tuple(every[i] for i in used),
    )
