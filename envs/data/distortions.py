"""Image-space distortions of equirectangular panoramas, graded in five levels.

The kinds mirror the 360° IQA datasets: JPEG and JPEG2000 compression (OIQA, CVIQD), Gaussian
blur and Gaussian noise (OIQA, JUFE), over/under exposure (JUFE's brightness distortion) and
stitching misalignment (JUFE). Each kind has five levels, 1 = mild .. 5 = heavy, whose damage
grows monotonically: the parameter tables below are ordered so that SSIM and PSNR against the
clean image fall strictly with the level (``tests/test_distortions.py`` checks this on a photo).

Why the parameters are in the units they are:

* blur sigma and stitching shifts are given in *degrees of yaw* and converted with the ERP width,
  so a level means the same angular damage (what a viewport sees) at 1024 or 8192 pixels wide;
* JPEG / JPEG2000 parameters and noise sigma are per pixel, as in the real datasets;
* exposure is a gain in photographic stops applied in (approximately) linear light, with the
  highlights clipped (over) or the shadows crushed below a black point (under), then re-encoded
  to 8 bits: this is where real exposure errors lose information, not in the gain itself.

Randomness (noise samples, stitching seam positions and directions) comes only from the ``rng``
argument, so calling :func:`apply_distortion` with generators in the same state gives the same
output; calling it for several levels with identically seeded generators gives *nested* damage
(the same noise pattern, the same seams) that only grows in magnitude.

:func:`local_mask` and :func:`apply_local` restrict a distortion to a feathered spherical cap,
with the angular distance measured on the sphere, so caps are round near the poles and continue
across the ±180° yaw seam.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "DISTORTIONS",
    "LEVELS",
    "apply_distortion",
    "apply_local",
    "local_mask",
    "stitching_misalignment",
]

#: Distortion kinds understood by :func:`apply_distortion`.
DISTORTIONS: tuple[str, ...] = (
    "jpeg", "jpeg2000", "blur", "noise", "overexposure", "underexposure", "stitching",
)
#: Valid levels, mild to heavy.
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)

# Per-level parameters (index = level - 1). Chosen so that level 1 is visible in a 224 px
# viewport of a 1024-wide ERP and level 5 is about as bad as the worst levels of OIQA/JUFE.
JPEG_QUALITY: tuple[int, ...] = (40, 25, 15, 9, 5)
# OpenCV's JPEG2000 rate parameter: compressed size = raw size * value / 1000.
JPEG2000_RATE_X1000: tuple[int, ...] = (80, 40, 20, 10, 5)
BLUR_SIGMA_DEG: tuple[float, ...] = (0.4, 0.7, 1.1, 1.7, 2.6)
NOISE_SIGMA: tuple[float, ...] = (6.0, 12.0, 20.0, 32.0, 48.0)
OVEREXPOSURE_STOPS: tuple[float, ...] = (0.6, 1.2, 1.8, 2.5, 3.3)
UNDEREXPOSURE_STOPS: tuple[float, ...] = (0.8, 1.6, 2.4, 3.2, 4.0)
#: Linear-light black point subtracted after under-exposure (crushes the darkest shadows).
UNDEREXPOSURE_BLACK = 0.0015
STITCH_SHIFT_DEG: tuple[float, ...] = (0.6, 1.2, 2.0, 3.0, 4.4)
#: Width (yaw degrees) of the ghosted blend zone before a seam and of the shifted zone after it.
#: It grows with the level as well: once the shift exceeds the correlation length of a texture,
#: a larger shift alone no longer lowers SSIM (the copy is "as different" as it gets), but a wider
#: damaged zone still does -- so damage stays strictly monotone in the level.
STITCH_ZONE_DEG: tuple[float, ...] = (3.5, 4.5, 6.0, 7.5, 9.5)

# sRGB is close to a 2.2 power law; the exact piecewise curve would change nothing visible here.
_GAMMA = 2.2


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a uint8 image of shape (H, W, 3), got shape {shape} and dtype {dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image of shape {image.shape} is too small to distort")


def _check_level(level: int) -> int:
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)) or int(level) not in LEVELS:
        raise ValueError(f"distortion level must be an integer in 1..5, got {level!r}")
    return int(level)


def apply_distortion(image: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Return a distorted copy of an RGB ``uint8`` image.

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB, usually an ERP panorama (blur and stitching read the
            width as 360° of yaw).
        kind: one of :data:`DISTORTIONS`.
        level: 1 (mild) .. 5 (heavy).
        rng: source of randomness for ``noise`` and ``stitching``; unused by the other kinds.

    Returns:
        A new ``uint8`` array of the same shape.

    Raises:
        ValueError: unknown kind, level outside 1..5, or not an ``(H, W, 3)`` ``uint8`` image.
    """
    _check_image(image)
    level = _check_level(level)
    i = level - 1
    if kind == "jpeg":
        return _encode_decode(image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[i]])
    if kind == "jpeg2000":
        return _encode_decode(image, ".jp2", [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, JPEG2000_RATE_X1000[i]])
    if kind == "blur":
        sigma = BLUR_SIGMA_DEG[i] * image.shape[1] / 360.0
        # Wrap horizontally (the ERP is periodic in yaw) by padding before blurring.
        pad = int(np.ceil(4 * sigma)) + 1
        padded = cv2.copyMakeBorder(image, 0, 0, pad, pad, cv2.BORDER_WRAP)
        blurred = cv2.GaussianBlur(padded, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        return np.ascontiguousarray(blurred[:, pad:-pad])
    if kind == "noise":
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(NOISE_SIGMA[i])
        return np.clip(np.rint(image.astype(np.float32) + noise), 0, 255).astype(np.uint8)
    if kind == "overexposure":
        return cv2.LUT(image, _exposure_lut(OVEREXPOSURE_STOPS[i], black=0.0))
    if kind == "underexposure":
        return cv2.LUT(image, _exposure_lut(-UNDEREXPOSURE_STOPS[i], black=UNDEREXPOSURE_BLACK))
    if kind == "stitching":
        # A rig of 2..4 cameras has that many seams, evenly spaced in yaw from a random origin.
        n_seams = int(rng.integers(2, 5))
        origin = float(rng.uniform(-180.0, 180.0))
        seams = [origin + k * 360.0 / n_seams for k in range(n_seams)]
        return stitching_misalignment(image, level, rng, seams)
    raise ValueError(f"unknown distortion kind {kind!r}; expected one of {', '.join(DISTORTIONS)}")


def _encode_decode(image: np.ndarray, ext: str, params: list[int]) -> np.ndarray:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(ext, bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext} (build without this codec?)")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError(f"OpenCV could not decode the {ext} it encoded")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _exposure_lut(stops: float, *, black: float) -> np.ndarray:
    """256-entry LUT: to linear light, gain of ``2**stops``, black point, clip, back to 8 bits."""
    linear = (np.arange(256, dtype=np.float64) / 255.0) ** _GAMMA
    exposed = np.clip((linear * 2.0**stops - black) / (1.0 - black), 0.0, 1.0)
    return np.rint(255.0 * exposed ** (1.0 / _GAMMA)).astype(np.uint8)


def stitching_misalignment(
    image: np.ndarray, level: int, rng: np.random.Generator, seam_yaws_deg: Sequence[float]
) -> np.ndarray:
    """Simulate misaligned stitching along the meridians at ``seam_yaws_deg``.

    At each seam the content of the neighbouring camera is displaced by
    ``STITCH_SHIFT_DEG[level - 1]`` degrees in a random direction (``rng``). Over the
    ``STITCH_ZONE_DEG[level - 1]`` before the seam the two cameras are cross-faded, which produces
    the double-image ghosting of a blended overlap; over as many degrees after it the
    displaced copy is shown alone (content duplicated or missing), and where the zone ends the
    image snaps back, leaving the hard discontinuity (broken horizon, cut edges) typical of a
    bad seam. Outside these zones the image is untouched.

    Args:
        image: ``(H, W, 3)`` ``uint8`` ERP.
        level: 1..5, scales the displacement.
        rng: draws the displacement direction of each seam (one angle per seam, in order).
        seam_yaws_deg: yaw of each seam; zones of nearby seams must not overlap.
    """
    _check_image(image)
    level = _check_level(level)
    height, width = image.shape[:2]
    px_per_deg = width / 360.0
    shift = STITCH_SHIFT_DEG[level - 1] * px_per_deg
    zone = max(1, int(round(STITCH_ZONE_DEG[level - 1] * px_per_deg)))
    out = image.copy()
    rows = np.arange(height, dtype=np.float32)
    for seam_yaw in seam_yaws_deg:
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
        dx, dy = shift * np.cos(angle), shift * np.sin(angle)
        seam_col = int(round((float(seam_yaw) + 180.0) / 360.0 * width))
        # Columns of the two zones (wrapping in yaw), plus margin for the displaced source pixels.
        margin = int(np.ceil(abs(dx))) + 2
        cols = (np.arange(seam_col - zone - margin, seam_col + zone + margin)) % width
        strip = image[:, cols]
        local_x = np.arange(strip.shape[1], dtype=np.float32)
        map_x = np.broadcast_to(local_x[None, :] - np.float32(dx), strip.shape[:2])
        map_y = np.broadcast_to(rows[:, None] - np.float32(dy), strip.shape[:2])
        shifted = cv2.remap(strip, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        # Blend weight: ramp 0 -> 1 over the zone before the seam, 1 over the zone after it.
        offset = np.arange(strip.shape[1]) - (margin + zone)  # 0 at the seam column
        ramp = np.clip((offset + zone) / zone, 0.0, 1.0)
        ramp[offset >= zone] = 0.0
        alpha = ramp.astype(np.float32)[None, :, None]
        blended = strip.astype(np.float32) * (1.0 - alpha) + shifted.astype(np.float32) * alpha
        inner = slice(margin, strip.shape[1] - margin)
        out[:, cols[inner]] = np.rint(blended[:, inner]).astype(np.uint8)
    return out


def local_mask(
    height: int,
    width: int,
    center_yaw_deg: float,
    center_pitch_deg: float,
    radius_deg: float,
    feather_deg: float,
) -> np.ndarray:
    """Feathered spherical cap on an ERP grid, ``float32 (height, width)`` in [0, 1].

    A pixel (sampled at its centre) is 1 within ``radius_deg`` of great-circle distance from the
    cap centre, 0 beyond ``radius_deg + feather_deg``, and falls along a raised-cosine ramp in
    between (smooth, so blending leaves no visible edge). Yaw/pitch follow the package
    convention: column ``u = (yaw + 180) / 360 * W``, pitch +90 at the top row.

    Raises:
        ValueError: non-positive size or radius, negative feather.
    """
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    if not radius_deg > 0:
        raise ValueError(f"cap radius must be positive, got {radius_deg}")
    if not feather_deg >= 0:
        raise ValueError(f"cap feather must be non-negative, got {feather_deg}")
    yaw = np.deg2rad((np.arange(width) + 0.5) / width * 360.0 - 180.0)
    pitch = np.deg2rad(90.0 - (np.arange(height) + 0.5) / height * 180.0)
    c_yaw, c_pitch = np.deg2rad(center_yaw_deg), np.deg2rad(center_pitch_deg)
    # Spherical law of cosines, evaluated as an outer sum to stay (H, W) without trig per pixel.
    cos_dist = (np.sin(pitch)[:, None] * np.sin(c_pitch)
                + np.cos(pitch)[:, None] * np.cos(c_pitch) * np.cos(yaw - c_yaw)[None, :])
    dist = np.rad2deg(np.arccos(np.clip(cos_dist, -1.0, 1.0)))
    if feather_deg == 0:
        return (dist <= radius_deg).astype(np.float32)
    t = np.clip((dist - radius_deg) / feather_deg, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


def apply_local(image: np.ndarray, distorted: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend ``distorted`` into ``image`` with weights ``mask`` (1 = distorted, 0 = clean).

    Pixels where the mask is exactly 0 are returned bit-identical to ``image``.

    Raises:
        ValueError: shapes disagree or the inputs are not ``uint8`` RGB images.
    """
    _check_image(image)
    _check_image(distorted)
    if distorted.shape != image.shape or mask.shape != image.shape[:2]:
        raise ValueError(f"shape mismatch: image {image.shape}, distorted {distorted.shape}, mask {mask.shape}")
    weight = np.clip(mask.astype(np.float32), 0.0, 1.0)[:, :, None]
    blended = image.astype(np.float32) * (1.0 - weight) + distorted.astype(np.float32) * weight
    return np.rint(blended).astype(np.uint8)
