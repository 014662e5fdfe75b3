"""Reading and writing equirectangular (ERP) panoramas.

Every panorama enters the package through :func:`read_erp` (files) or :func:`as_erp_array`
(arrays), so the rest of the code can rely on one representation: a C-contiguous ``uint8``
array of shape ``(H, W, 3)`` in RGB order with ``W == 2 * H``.

Conversions, and why:

* grey -> RGB by repeating the channel (backbones expect three channels);
* RGBA / grey+alpha -> RGB by *dropping* alpha. IQA datasets store opaque panoramas; an alpha
  channel there is an export artefact, and compositing on a background colour would invent
  pixels that the subjects never rated;
* 16-bit -> 8-bit by scaling (``round(v / 257)``, so 65535 -> 255), never by clipping, which
  would turn almost every pixel white;
* an aspect ratio within ``aspect_tolerance`` of 2:1 (cropped or padded exports) is resampled to
  exactly ``W = 2 * H`` keeping the height; anything further off is not an ERP and is rejected.

EXIF orientation is ignored (``IMREAD_UNCHANGED``): ERP files are stored upright, and a 90°
rotation would turn a 2:1 panorama into a 1:2 one.

Files are identified by their signature bytes, not by their extension, and truncated JPEG, PNG
and WebP files are detected from their container structure before decoding: libjpeg fills a
cut-off JPEG with grey and only prints a warning, so a decode that "succeeds" proves nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from rl_scaniqa.envs.errors import ImageError
from rl_scaniqa.envs.storage import atomic_path

__all__ = ["SUPPORTED_SUFFIXES", "as_erp_array", "read_erp", "write_image"]

#: File extensions accepted by :func:`write_image` (reading goes by file signature).
SUPPORTED_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"  # chunk type + CRC of the (empty) IEND chunk
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def _sniff_format(data: bytes) -> str | None:
    """The container format from the leading bytes, or None when it is not one we support."""
    if data.startswith(_JPEG_SOI):
        return "JPEG"
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in _TIFF_SIGNATURES:
        return "TIFF"
    return None


def _truncation_problem(data: bytes, fmt: str) -> str | None:
    """Describe why ``data`` looks truncated, or return None when its structure is complete."""
    if fmt == "JPEG":
        # Entropy-coded data byte-stuffs 0xFF, so an EOI marker can only appear as a real marker.
        # Requiring one after the last start-of-scan also ignores the EOI of an EXIF thumbnail
        # (which sits before the main image's scans) and tolerates trailing bytes after EOI.
        end = data.rfind(_JPEG_EOI)
        if end < 0 or end < data.rfind(_JPEG_SOS):
            return "truncated JPEG (no end-of-image marker after the last scan)"
    elif fmt == "PNG":
        # Searched from the end, so a complete file is confirmed after a few bytes.
        if data.rfind(_PNG_IEND) < 0:
            return "truncated PNG (no IEND chunk)"
    elif fmt == "WebP":
        # RIFF stores the payload size after the 8-byte header.
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            return f"truncated WebP ({len(data)} of {declared} bytes present)"
    return None


def read_erp(path: str | os.PathLike[str], *, aspect_tolerance: float = 0.01) -> np.ndarray:
    """Read an equirectangular panorama as ``uint8`` RGB of shape ``(H, 2H, 3)``.

    Accepts JPEG, PNG, WebP and TIFF with 1, 2 (grey+alpha), 3 or 4 channels at 8 or 16 bits;
    see the module docstring for the conversions applied.

    Args:
        path: the image file.
        aspect_tolerance: largest accepted relative deviation of ``W / H`` from 2; images within
            it are resampled to exactly 2:1.

    Raises:
        ImageError: naming ``path``, when the file is missing, unreadable, not a supported image,
            truncated, has an unsupported sample type, or is not (close enough to) 2:1.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(f"{path}: file is empty")
    fmt = _sniff_format(data)
    if fmt is None:
        raise ImageError(f"{path}: not a supported image (file signature is not JPEG, PNG, WebP or TIFF)")
    problem = _truncation_problem(data, fmt)
    if problem is not None:
        raise ImageError(f"{path}: {problem}")
    # IMREAD_UNCHANGED keeps bit depth and alpha so that we convert them deliberately below
    # (the default flag would silently clip 16-bit samples to 8 bits by dropping low bits).
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ImageError(f"{path}: {fmt} data is corrupt and could not be decoded")
    return _normalise(pixels, str(path), bgr=True, aspect_tolerance=aspect_tolerance)


def as_erp_array(image: np.ndarray, name: str = "<array>", *, aspect_tolerance: float = 0.01) -> np.ndarray:
    """Validate and convert an in-memory panorama exactly as :func:`read_erp` does for files.

    ``image`` is RGB(A) or grey, ``uint8`` or ``uint16``, shape ``(H, W)`` or ``(H, W, C)`` with
    ``C`` in 1..4. The result may share memory with ``image`` when no conversion is needed.

    Raises:
        ImageError: naming ``name``, for a wrong type, shape, sample type or aspect ratio.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    return _normalise(image, name, bgr=False, aspect_tolerance=aspect_tolerance)


def _normalise(pixels: np.ndarray, name: str, *, bgr: bool, aspect_tolerance: float) -> np.ndarray:
    """Shared conversion to ``uint8`` RGB with ``W == 2H``; ``bgr`` marks OpenCV channel order."""
    rgb = _to_rgb8(pixels, name, bgr=bgr)
    return _enforce_two_to_one(rgb, name, aspect_tolerance)


def _to_rgb8(pixels: np.ndarray, name: str, *, bgr: bool) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{name}: unsupported image shape {pixels.shape}; expected (H, W) or (H, W, 1..4)")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageError(f"{name}: image has no pixels (shape {pixels.shape})")

    if pixels.dtype == np.uint16:
        # round(v / 257) maps 0..65535 onto 0..255 exactly at both ends.
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ImageError(
            f"{name}: unsupported sample type {pixels.dtype}; expected 8- or 16-bit unsigned integers"
        )

    if pixels.ndim == 2:
        return np.ascontiguousarray(np.repeat(pixels[:, :, None], 3, axis=2))
    channels = pixels.shape[2]
    if channels == 2:  # grey + alpha: alpha dropped (see module docstring)
        return np.ascontiguousarray(np.repeat(pixels[:, :, :1], 3, axis=2))
    colour = pixels[:, :, :3]  # drops alpha when present
    if bgr:
        colour = colour[:, :, ::-1]
    return np.ascontiguousarray(colour)


def _enforce_two_to_one(rgb: np.ndarray, name: str, tolerance: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    if width == 2 * height:
        return rgb
    ratio = width / height
    if abs(ratio / 2.0 - 1.0) > tolerance:
        raise ImageError(
            f"{name}: size {width}x{height} (width x height) has aspect ratio {ratio:.3f}:1; "
            f"an equirectangular panorama must be 2:1 (within {tolerance:.1%})"
        )
    target = (2 * height, height)  # cv2 takes (width, height)
    interpolation = cv2.INTER_AREA if target[0] < width else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(rgb, target, interpolation=interpolation))


def write_image(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an RGB (or grey) ``uint8`` image atomically; the extension picks the format.

    Raises:
        ImageError: naming ``path``, for an unsupported extension, a wrong array, or a failed encode.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise ImageError(f"{path}: unsupported extension {path.suffix!r}; use one of {supported}")
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        kind = rgb.dtype if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ImageError(f"{path}: expected a uint8 array to write, got {kind}")
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        pixels = np.ascontiguousarray(rgb[:, :, ::-1])  # OpenCV encodes BGR
    elif rgb.ndim == 2:
        pixels = rgb
    else:
        raise ImageError(f"{path}: expected an (H, W, 3) RGB or (H, W) grey array, got shape {rgb.shape}")
    # atomic_path keeps the suffix on the temporary name, so imwrite still infers the format.
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels):
            raise ImageError(f"{path}: OpenCV could not encode the image as {suffix}")
