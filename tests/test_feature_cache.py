"""Tests of the feature cache: contents against direct computations, keys, staleness, resume, errors."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from skimage.metrics import structural_similarity

from rl_scaniqa.envs.data.datasets.records import MosScale, PanoramaRecord
from rl_scaniqa.envs.data.distortions import DISTORTIONS, apply_distortion
from rl_scaniqa.envs.data.geometry import ViewportGrid, canonical_erp, extract_viewports
from rl_scaniqa.envs.data.imageio import read_erp
from rl_scaniqa.envs.errors import CacheError, DatasetError, ImageError
from rl_scaniqa.envs.features.backbones import Backbone, NSSBackbone
from rl_scaniqa.envs.features.cache import (
    AUGMENTATION_VIEWS,
    FeatureStats,
    augmentation_for,
    build_cache,
    file_digests,
    get_or_build_cache,
    grey_viewports,
    load_cache,
    ssim_matrix,
)

GRID = ViewportGrid(size=32)
VIEWS = ("weak", "mild", "heavy")
N_IMAGES = 6


class CountingBackbone(Backbone):
    """NSS features, counting the batches it embeds; optionally fails or emits NaN on one call."""

    def __init__(self, fail_on_call: int | None = None, nan_on_call: int | None = None) -> None:
        self.inner = NSSBackbone()
        self.name, self.dim, self.device, self.batch_size = self.inner.name, self.inner.dim, "cpu", 64
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.nan_on_call = nan_on_call

    def _embed(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        features = self.inner(images)
        if self.calls == self.nan_on_call:
            features[0, 3] = np.nan
        return features


def _panorama(rng: np.random.Generator, height: int = 128) -> np.ndarray:
    """Smooth random colour blobs plus fine texture: enough structure for NSS, SSIM and entropy."""
    width = 2 * height
    coarse = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 200.0
    image += rng.normal(0.0, 12.0, image.shape).astype(np.float32)
    ramp = np.linspace(0.0, 40.0, height, dtype=np.float32)[:, None, None]
    return np.clip(image + ramp, 0, 255).astype(np.uint8)


def _contents(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Metadata and tensors of a safetensors file (its header's key order is not deterministic)."""
    with safe_open(str(path), framework="numpy") as handle:
        return handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}


def _assert_same_file_contents(a: Path, b: Path) -> None:
    meta_a, tensors_a = _contents(a)
    meta_b, tensors_b = _contents(b)
    assert meta_a == meta_b and sorted(tensors_a) == sorted(tensors_b)
    for name, array in tensors_a.items():
        assert array.dtype == tensors_b[name].dtype
        np.testing.assert_array_equal(array, tensors_b[name], err_msg=name)


def _write_dataset(folder: Path, n: int = N_IMAGES, seed: int = 0) -> list[PanoramaRecord]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for k in range(n):
        path = folder / f"img{k}.png"
        cv2.imwrite(str(path), cv2.cvtColor(_panorama(rng), cv2.COLOR_RGB2BGR))
        extra = {"start_yaw": 100.0, "start_pitch": -30.0} if k == 1 else {}
        if k == 3:  # as Synth360 labels a local distortion (strings, read by the csv loader)
            extra = {"scope": "local", "cap_yaw": "-120.500", "cap_pitch": "12.250", "cap_radius": "30.000"}
        elif k == 5:  # as Synth360 labels a global distortion: empty cap cells
            extra = {"scope": "global", "cap_yaw": "", "cap_pitch": "", "cap_radius": ""}
        records.append(PanoramaRecord(path=path, mos=1.0 + 0.5 * k, ref_id=f"ref{k // 2}",
                                      distortion="reference" if k % 2 == 0 else "noise",
                                      level=k % 2, extra=extra))
    return records


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[PanoramaRecord]:
    return _write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def built(dataset: list[PanoramaRecord], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache of the shared dataset with three augmented views, built once for the module, in-process."""
    return build_cache(dataset, NSSBackbone(), GRID, tmp_path_factory.mktemp("cache"), dataset="synth360",
                       augmentations=VIEWS, chunk_size=4, progress=False, workers=1)


def test_shapes_dtypes_and_labels(dataset, built):
    cache = load_cache(built, expect_backbone="nss-v3", expect_grid=GRID)
    m, v, d, a = N_IMAGES, GRID.n_viewports, NSSBackbone().dim, len(VIEWS)
    assert len(cache) == m and cache.dim == d and cache.backbone == "nss-v3" and cache.grid == GRID
    expected = {"viewport_features": ((m, v, d), np.float32), "global_features": ((m, d), np.float32),
                "entropy": ((m, v), np.float32), "ssim": ((m, v, v), np.float32),
                "thumbnails": ((m, 128, 256, 3), np.uint8), "start_viewports": ((m,), np.int64),
                "levels": ((m,), np.int64), "mos": ((m,), np.float32), "caps": ((m, 3), np.float32),
                "aug_viewport_features": ((m, a, v, d), np.float32),
                "aug_global_features": ((m, a, d), np.float32)}
    for name, (shape, dtype) in expected.items():
        array = getattr(cache, name)
        assert array.shape == shape and array.dtype == dtype, name
    assert cache.image_ids == [r.image_id for r in dataset]
    assert cache.paths == [str(r.path) for r in dataset]
    assert cache.ref_ids == [r.ref_id for r in dataset]
    assert cache.distortions == [r.distortion for r in dataset]
    assert cache.levels.tolist() == [r.level for r in dataset]
    np.testing.assert_allclose(cache.mos, [r.mos for r in dataset])
    assert cache.dataset == "synth360" and cache.mos_scale == MosScale(1.0, 5.0)
    np.testing.assert_allclose(cache.mos_normalized, (cache.mos - 1.0) / 4.0, rtol=1e-6)
    assert cache.augmentations == VIEWS
    # Only image 1 carries a start direction; the others get -1.
    assert cache.start_viewports.tolist() == [-1, GRID.nearest(100.0, -30.0), -1, -1, -1, -1]
    # Only image 3 has a damaged cap; the others (image 5's empty cells included) have NaN rows.
    np.testing.assert_array_equal(cache.caps[3], np.float32([-120.5, 12.25, 30.0]))
    assert np.isnan(np.delete(cache.caps, 3, axis=0)).all()
    erp = read_erp(dataset[3].path)
    np.testing.assert_array_equal(cache.thumbnails[3], cv2.resize(canonical_erp(erp, GRID), (256, 256 // 2),
                                                                interpolation=cv2.INTER_AREA))
    metadata, _ = _contents(built)
    assert metadata["grid_key"] == GRID.key() and json.loads(metadata["augmentations"]) == list(VIEWS)
    assert metadata["key"] in built.name and len(metadata["fingerprint"]) == 64
    assert not any(p.name.endswith(".parts") for p in built.parent.iterdir())


def test_features_entropy_and_ssim_match_direct_computations(dataset, built):
    cache = load_cache(built)
    backbone = NSSBackbone()
    for k in (0, 5):
        # The cache projects from the canonical-density ERP, whatever the file's own width.
        erp = canonical_erp(read_erp(dataset[k].path), GRID)
        viewports = extract_viewports(erp, GRID)
        np.testing.assert_allclose(cache.viewport_features[k], backbone(viewports), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(cache.global_features[k], backbone.global_features(erp, GRID.size),
                                   rtol=1e-6, atol=1e-6)
        grey = [cv2.cvtColor(vp, cv2.COLOR_RGB2GRAY) for vp in viewports]
        for j in (0, 13, 31):
            p = np.bincount(grey[j].ravel(), minlength=256) / grey[j].size
            p = p[p > 0]
            assert cache.entropy[k, j] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-5)
        # 32 px viewports are below SSIM_RESOLUTION, so the cached SSIM is the full-resolution one.
        for i, j in ((0, 1), (4, 20), (30, 31)):
            reference = structural_similarity(grey[i], grey[j], gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=255)
            assert cache.ssim[k, i, j] == pytest.approx(reference, abs=1e-4)
        np.testing.assert_array_equal(cache.ssim[k], cache.ssim[k].T)
        np.testing.assert_array_equal(np.diag(cache.ssim[k]), 1.0)


def test_ssim_matrix_downsamples_large_viewports_to_64px():
    erp = _panorama(np.random.default_rng(3), height=256)
    viewports = extract_viewports(erp, ViewportGrid(n_lon=4, n_lat=2, size=128))
    grey = grey_viewports(viewports)
    matrix = ssim_matrix(grey)
    small = [cv2.resize(g, (64, 64), interpolation=cv2.INTER_AREA) for g in grey]
    for i, j in ((0, 1), (2, 7), (3, 4)):
        reference = structural_similarity(small[i], small[j], gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255)
        assert matrix[i, j] == pytest.approx(reference, abs=1e-4)
    same = ssim_matrix(np.stack([grey[0], grey[0], 255 - grey[0]]))
    assert same[0, 1] == pytest.approx(1.0, abs=1e-5) and same[0, 2] < 0.5
    with pytest.raises(ValueError, match="SSIM window"):
        ssim_matrix(grey[:, :8, :8])


def test_build_is_deterministic_and_reused_without_recomputation(dataset, built, tmp_path):
    backbone = CountingBackbone()
    again = build_cache(dataset, backbone, GRID, tmp_path, dataset="synth360", augmentations=VIEWS,
                        chunk_size=3, progress=False)
    assert again.name == built.name
    _assert_same_file_contents(again, built)
    calls = backbone.calls
    cache = get_or_build_cache(dataset, backbone, GRID, tmp_path, dataset="synth360", augmentations=VIEWS,
                               progress=False)
    assert backbone.calls == calls and len(cache) == N_IMAGES


def test_changed_image_gives_new_key_and_rebuild(tmp_path):
    records = _write_dataset(tmp_path / "data", n=2)
    backbone = CountingBackbone()
    first = build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", progress=False)
    calls = backbone.calls
    stat = records[1].path.stat()
    os.utime(records[1].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", progress=False)
    assert second != first and backbone.calls == 2 * calls
    cache = get_or_build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", progress=False)
    assert backbone.calls == 2 * calls and len(cache) == 2
    # Another backbone, grid, labels, record order or views: other keys as well.
    renamed = CountingBackbone()
    renamed.name = "nss-v1-variant"
    other_grid = ViewportGrid(size=48)
    relabelled = [records[0], PanoramaRecord(path=records[1].path, mos=9.0, ref_id="ref0", distortion="noise",
                                             level=1)]
    keys = {second.name,
            build_cache(records, renamed, GRID, tmp_path / "cache", dataset="synth360", progress=False).name,
            build_cache(records, backbone, other_grid, tmp_path / "cache", dataset="synth360", progress=False).name,
            build_cache(relabelled, backbone, GRID, tmp_path / "cache", dataset="synth360", progress=False).name,
            build_cache(records[::-1], backbone, GRID, tmp_path / "cache", dataset="synth360", progress=False).name,
            build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", augmentations=("weak",),
                        progress=False).name}
    assert len(keys) == 6


def test_load_rejects_other_backbone_or_grid_with_clear_message(built):
    with pytest.raises(CacheError, match=r"built with backbone nss-v3, expected dinov2-cls:facebook/dinov2-small"):
        load_cache(built, expect_backbone="dinov2-cls:facebook/dinov2-small")
    with pytest.raises(CacheError, match=r"built with grid lon8-lat4-fov90-s32, expected lon8-lat4-fov90-s64"):
        load_cache(built, expect_grid=ViewportGrid(size=64))
    with pytest.raises(CacheError, match=str(built.name)):
        load_cache(built, expect_grid=ViewportGrid(size=64))


def test_interrupted_build_resumes_from_complete_chunks(tmp_path):
    records = _write_dataset(tmp_path / "data", n=N_IMAGES)
    # Two backbone calls per image (viewports, global view); chunks of 2 images = 4 calls.
    # Failing on call 7 interrupts the second chunk after the first chunk was saved.
    failing = CountingBackbone(fail_on_call=7)
    with pytest.raises(KeyboardInterrupt):
        build_cache(records, failing, GRID, tmp_path / "resumed", dataset="synth360", chunk_size=2, progress=False)
    parts = [p for p in (tmp_path / "resumed").iterdir() if p.name.endswith(".parts")]
    assert len(parts) == 1 and [p.name for p in parts[0].iterdir()] == ["000000-000002.safetensors"]
    assert not any(p.suffix == ".safetensors" for p in (tmp_path / "resumed").iterdir())
    # What a process killed (not interrupted) while writing the final file would leave behind.
    stem = parts[0].name.removesuffix(".parts")
    (tmp_path / "resumed" / f".{stem}.x1y2.tmp.safetensors").write_bytes(b"half a file")

    resuming = CountingBackbone()
    resumed = build_cache(records, resuming, GRID, tmp_path / "resumed", dataset="synth360", chunk_size=2,
                          progress=False)
    assert resuming.calls == 2 * (N_IMAGES - 2)
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [f".{stem}.lock", resumed.name]

    straight = build_cache(records, NSSBackbone(), GRID, tmp_path / "straight", dataset="synth360", chunk_size=2,
                           progress=False)
    _assert_same_file_contents(resumed, straight)


def test_parallel_build_gives_the_same_arrays_as_the_in_process_build(dataset, built, tmp_path):
    # 3 chunks over 2 spawned workers, against the module's in-process build (2 chunks).
    parallel = build_cache(dataset, NSSBackbone(), GRID, tmp_path, dataset="synth360", augmentations=VIEWS,
                           chunk_size=2, progress=False, workers=2)
    assert parallel.name == built.name
    _assert_same_file_contents(parallel, built)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{parallel.stem}.lock", parallel.name]


def test_parallel_worker_image_error_surfaces_naming_the_file(tmp_path):
    records = _write_dataset(tmp_path / "data", n=3)
    records[1].path.write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"img1\.png"):
        build_cache(records, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360", chunk_size=1,
                    progress=False, workers=2)
    with pytest.raises(CacheError, match="workers must be at least 1"):
        build_cache(records, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360", workers=0)


def test_backbones_that_are_not_parallel_safe_build_in_process(tmp_path):
    records = _write_dataset(tmp_path / "data", n=2)
    backbone = CountingBackbone()  # not parallel_safe: workers=2 must still call this very object
    assert not backbone.parallel_safe and NSSBackbone().parallel_safe
    build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", chunk_size=1, progress=False,
                workers=2)
    assert backbone.calls == 2 * len(records)


def test_concurrent_builders_wait_for_each_other_and_reuse_the_file(tmp_path):
    records = _write_dataset(tmp_path / "data", n=2)
    started = threading.Event()

    class SlowBackbone(CountingBackbone):
        def _embed(self, images: np.ndarray) -> np.ndarray:
            started.set()
            time.sleep(0.05)
            return super()._embed(images)

    first = SlowBackbone()
    results: list[Path] = []
    worker = threading.Thread(target=lambda: results.append(
        build_cache(records, first, GRID, tmp_path / "cache", dataset="synth360", progress=False)))
    worker.start()
    assert started.wait(10)
    second = CountingBackbone()
    path = build_cache(records, second, GRID, tmp_path / "cache", dataset="synth360", progress=False)
    worker.join()
    assert results == [path] and first.calls == 4 and second.calls == 0


def test_foreign_or_corrupt_chunks_are_recomputed(tmp_path):
    records = _write_dataset(tmp_path / "data", n=4)
    failing = CountingBackbone(fail_on_call=7)
    with pytest.raises(KeyboardInterrupt):
        build_cache(records, failing, GRID, tmp_path / "cache", dataset="synth360", chunk_size=2, progress=False)
    parts = next(p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".parts"))
    chunk = parts / "000000-000002.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:-50])
    backbone = CountingBackbone()
    build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", chunk_size=2, progress=False)
    assert backbone.calls == 2 * 4


def test_nan_features_raise_naming_the_image(tmp_path):
    records = _write_dataset(tmp_path / "data", n=3)
    backbone = CountingBackbone(nan_on_call=4)  # the global view of the second image
    with pytest.raises(CacheError, match=r"img1\.png.*NaN/inf.*global view"):
        build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", progress=False)


def test_corrupt_truncated_or_nan_files_are_rejected(built, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(built.read_bytes()[:-1000])
    with pytest.raises(CacheError, match=r"truncated\.safetensors.*corrupt or truncated"):
        load_cache(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all" * 10)
    with pytest.raises(CacheError, match="corrupt or truncated"):
        load_cache(garbage)
    with pytest.raises(CacheError, match="not found"):
        load_cache(tmp_path / "missing.safetensors")
    metadata, tensors = _contents(built)
    tensors["global_features"][2, 0] = np.inf
    poisoned = tmp_path / "poisoned.safetensors"
    # Digests recomputed: a file *written* with inf features (its digests agree) is still refused.
    save_file(tensors, str(poisoned), metadata={**metadata, "digests": file_digests(tensors, metadata)})
    with pytest.raises(CacheError, match=r"poisoned\.safetensors.*global_features.*NaN/inf"):
        load_cache(poisoned)


def test_a_cache_changed_after_it_was_written_is_refused_naming_the_array(built, tmp_path):
    metadata, tensors = _contents(built)
    untouched = tmp_path / "untouched.safetensors"
    save_file(tensors, str(untouched), metadata=metadata)  # same arrays and metadata, rewritten
    assert load_cache(untouched).image_ids == load_cache(built).image_ids
    # Zeroed features are finite and of the right shape: only the digest tells them apart.
    zeroed = tmp_path / "zeroed.safetensors"
    save_file({**tensors, "viewport_features": np.zeros_like(tensors["viewport_features"])}, str(zeroed),
              metadata=metadata)
    with pytest.raises(CacheError, match=r"zeroed\.safetensors: array 'viewport_features' does not match "
                                         r"its stored digest.*delete it to rebuild"):
        load_cache(zeroed)
    relabelled = tmp_path / "relabelled.safetensors"
    save_file({**tensors, "mos": tensors["mos"][::-1].copy()}, str(relabelled), metadata=metadata)
    with pytest.raises(CacheError, match=r"relabelled\.safetensors: array 'mos' does not match its stored digest"):
        load_cache(relabelled)
    # The label lists are metadata: a changed image id (fingerprint untouched) is caught as well.
    ids = json.loads(metadata["image_ids"])
    renamed = tmp_path / "renamed.safetensors"
    save_file(tensors, str(renamed), metadata={**metadata, "image_ids": json.dumps(ids[::-1])})
    with pytest.raises(CacheError, match=r"renamed\.safetensors: metadata does not match its stored digest"):
        load_cache(renamed)
    stripped = tmp_path / "stripped.safetensors"
    save_file(tensors, str(stripped), metadata={k: v for k, v in metadata.items() if k != "digests"})
    with pytest.raises(CacheError, match=r"stripped\.safetensors: feature cache has no valid 'digests'"):
        load_cache(stripped)


def test_a_changed_chunk_file_is_recomputed_on_resume(tmp_path):
    import rl_scaniqa.envs.features.cache as cache_module

    records = _write_dataset(tmp_path / "data", n=2)
    backbone = CountingBackbone(fail_on_call=3)  # 2 calls per image: dies in the second chunk
    with pytest.raises(KeyboardInterrupt):
        build_cache(records, backbone, GRID, tmp_path / "cache", dataset="synth360", chunk_size=1, progress=False)
    (chunk,) = (tmp_path / "cache").glob("*.parts/*.safetensors")
    metadata, tensors = _contents(chunk)
    save_file({**tensors, "entropy": np.zeros_like(tensors["entropy"])}, str(chunk), metadata=metadata)
    with pytest.raises(CacheError, match="'entropy' does not match its stored digest"):
        cache_module._open(chunk)
    resumed = CountingBackbone()
    path = build_cache(records, resumed, GRID, tmp_path / "cache", dataset="synth360", chunk_size=1, progress=False)
    assert resumed.calls == 4  # both chunks computed: the changed one was not kept
    assert (load_cache(path).entropy[0] > 0).all()


def test_corrupt_cache_at_the_key_path_is_rebuilt_with_a_warning(tmp_path):
    records = _write_dataset(tmp_path / "data", n=2)
    path = build_cache(records, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360", progress=False)
    original = tmp_path / "original.safetensors"
    original.write_bytes(path.read_bytes())
    path.write_bytes(original.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="rebuilding"):
        cache = get_or_build_cache(records, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360",
                                   progress=False)
    assert len(cache) == 2
    _assert_same_file_contents(path, original)


def test_augmented_views_are_real_distortions_ordered_by_severity(dataset, built):
    cache = load_cache(built)
    backbone = NSSBackbone()
    k = 2
    erp = read_erp(dataset[k].path)
    for a, view in enumerate(VIEWS):
        choice = augmentation_for(dataset[k].image_id, view)
        distorted = apply_distortion(erp, choice.kind, choice.level, np.random.default_rng(choice.seed))
        np.testing.assert_allclose(cache.aug_viewport_features[k, a], backbone(extract_viewports(canonical_erp(distorted, GRID), GRID)),
                                   rtol=1e-6, atol=1e-6)
    assert np.isfinite(cache.aug_viewport_features).all() and np.isfinite(cache.aug_global_features).all()
    stats = FeatureStats.fit(cache)
    clean = stats.standardize_viewports(cache.viewport_features)[:, None]
    views = stats.standardize_viewports(cache.aug_viewport_features)
    # Median over viewports and dimensions of the standardised change: robust to the few NSS
    # dimensions (clipped-highlight fractions) that are near-constant on clean images.
    change = np.median(np.abs(views - clean).reshape(N_IMAGES, len(VIEWS), -1), axis=2)  # (M, A)
    assert (change > 1e-3).all()
    weak, mild, heavy = change.mean(axis=0)
    assert weak < mild < heavy
    assert (change[:, 2] > change[:, 0]).all()
    # Views of one image are distinct from each other.
    for i in range(len(VIEWS)):
        for j in range(i + 1, len(VIEWS)):
            assert not np.allclose(cache.aug_global_features[:, i], cache.aug_global_features[:, j])


def test_augmentation_choices_are_deterministic_and_share_kind_for_the_triplet():
    ids = [f"image-{k}" for k in range(200)]
    kinds = set()
    for image_id in ids:
        weak, mild, heavy = (augmentation_for(image_id, v) for v in ("weak", "mild", "heavy"))
        assert augmentation_for(image_id, "heavy") == heavy
        assert mild.kind == heavy.kind and mild.level == 2 and heavy.level in (4, 5) and weak.level == 1
        assert weak.kind in AUGMENTATION_VIEWS["weak"][0] and heavy.kind in DISTORTIONS
        assert len({weak.seed, mild.seed, heavy.seed}) == 3
        kinds.add(heavy.kind)
    assert kinds == set(AUGMENTATION_VIEWS["heavy"][0])
    with pytest.raises(CacheError, match="unknown augmented view 'extreme'"):
        augmentation_for("x", "extreme")


def test_no_augmentations_give_empty_arrays_and_bad_arguments_fail(tmp_path):
    records = _write_dataset(tmp_path / "data", n=2)
    cache = get_or_build_cache(records, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360",
                               progress=False)
    d = cache.dim
    assert cache.augmentations == ()
    assert cache.aug_viewport_features.shape == (2, 0, GRID.n_viewports, d)
    assert cache.aug_global_features.shape == (2, 0, d)
    with pytest.raises(CacheError, match="unknown augmented view"):
        build_cache(records, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360", augmentations=("blurry",))
    with pytest.raises(CacheError, match="no images"):
        build_cache([], NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360")
    duplicate = [records[0], PanoramaRecord(path=records[1].path, mos=2.0, ref_id="r", distortion="noise", level=1,
                                            image_id=records[0].image_id)]
    with pytest.raises(DatasetError, match="image id 'img0' is also used"):
        build_cache(duplicate, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360")
    bad_start = [PanoramaRecord(path=records[0].path, mos=2.0, ref_id="r", distortion="noise", level=1,
                                extra={"start_yaw": "east", "start_pitch": 0})]
    with pytest.raises(DatasetError, match="img0.png.*start_yaw"):
        build_cache(bad_start, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360")
    missing = [PanoramaRecord(path=tmp_path / "nope.png", mos=2.0, ref_id="r", distortion="noise", level=1)]
    with pytest.raises(ImageError, match="nope.png"):
        build_cache(missing, NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360")


def test_caches_of_another_format_version_are_refused_and_never_reused(dataset, built, tmp_path, monkeypatch):
    # A cache written before the caps array (format 1) lacks it: loading names the version ...
    metadata, tensors = _contents(built)
    del tensors["caps"]
    old = tmp_path / "old.safetensors"
    older = {k: v for k, v in metadata.items() if k != "digests"}  # older files have no digests
    save_file(tensors, str(old), metadata={**older, "format_version": "1"})
    with pytest.raises(CacheError, match=r"old\.safetensors.*format version '1'.*rebuild"):
        load_cache(old)
    # ... and the version is part of the key, so a build never picks the old file up.
    import rl_scaniqa.envs.features.cache as cache_module
    current = cache_module.cache_key("f", "nss-v3", GRID, "synth360")
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", 1)
    assert cache_module.cache_key("f", "nss-v3", GRID, "synth360") != current


def test_malformed_damaged_caps_raise_naming_the_image(dataset, tmp_path):
    base = dataset[0]
    for extra, message in (({"cap_yaw": "10", "cap_pitch": "", "cap_radius": "30"}, "numeric"),
                           ({"cap_yaw": "10", "cap_pitch": "95", "cap_radius": "30"}, "not a cap"),
                           ({"cap_yaw": "10", "cap_pitch": "5", "cap_radius": "0"}, "not a cap")):
        record = PanoramaRecord(path=base.path, mos=2.0, ref_id="r", distortion="noise", level=1, extra=extra)
        with pytest.raises(DatasetError, match=f"img0.png.*{message}"):
            build_cache([record], NSSBackbone(), GRID, tmp_path / "cache", dataset="synth360", progress=False)


def test_subset_keeps_rows_in_the_given_order(built):
    cache = load_cache(built)
    part = cache.subset([4, 1])
    assert len(part) == 2 and part.image_ids == [cache.image_ids[4], cache.image_ids[1]]
    assert part.paths == [cache.paths[4], cache.paths[1]]
    np.testing.assert_array_equal(part.viewport_features, cache.viewport_features[[4, 1]])
    np.testing.assert_array_equal(part.aug_global_features, cache.aug_global_features[[4, 1]])
    np.testing.assert_array_equal(part.ssim[1], cache.ssim[1])
    assert part.start_viewports.tolist() == [-1, cache.start_viewports[1]]
    with pytest.raises(IndexError):
        cache.subset([N_IMAGES])


def test_feature_stats_fit_on_train_indices_and_round_trip(built):
    cache = load_cache(built)
    train = [0, 2, 3]
    stats = FeatureStats.fit(cache, train)
    views = cache.viewport_features[train].reshape(-1, cache.dim).astype(np.float64)
    np.testing.assert_allclose(stats.viewport_mean, views.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.global_std, np.maximum(cache.global_features[train].std(axis=0), 1e-6),
                               rtol=1e-4, atol=1e-6)
    z = stats.standardize_viewports(cache.viewport_features[train])
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.reshape(-1, cache.dim).mean(axis=0), 0.0, atol=1e-3)
    assert stats.standardize_global(cache.global_features).shape == cache.global_features.shape
    # A constant dimension gets the floor, not a zero std.
    cache.viewport_features[:, :, 0] = 7.0
    floored = FeatureStats.fit(cache, train)
    assert floored.viewport_std[0] == pytest.approx(1e-6)
    assert np.isfinite(floored.standardize_viewports(cache.viewport_features)).all()
    restored = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    for name in ("global_mean", "global_std", "viewport_mean", "viewport_std"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(stats, name))
    broken = stats.to_dict()
    broken["viewport_std"] = broken["viewport_std"][:-1]
    with pytest.raises(ValueError, match="different lengths"):
        FeatureStats.from_dict(broken)
    with pytest.raises(ValueError, match="at least one image"):
        FeatureStats.fit(cache, [])


def test_a_pool_is_only_used_when_asked_for_and_safe(monkeypatch):
    import types

    from rl_scaniqa.envs.features import cache as cache_module

    backbone = NSSBackbone()
    assert cache_module._worker_count(1, backbone, missing=8) == 1  # the library default
    assert cache_module._worker_count(4, backbone, missing=2) == 2
    # Code read from stdin has no file to re-import in a spawned worker: one process instead.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    with pytest.warns(UserWarning, match="one process"):
        assert cache_module._worker_count(4, backbone, missing=8) == 1
