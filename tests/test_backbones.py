import math

import cv2
import numpy as np
import pytest
import torch

from rl_scaniqa.envs.features.backbones import (
    BackboneLoadError,
    DinoV2Backbone,
    FusionBackbone,
    NSSBackbone,
    _aggd_fit,
    _ggd_fit,
    global_view,
    grey_entropy,
    make_backbone,
    resolve_device,
)


def _textured(size: int = 96, seed: int = 0) -> np.ndarray:
    """Photo-like content: smooth colour ramps, edges of several orientations, mild grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rings = 127 + 90 * np.sin(np.hypot(xx - size / 3, yy - size / 2) / 3.0)
    stripes = 127 + 90 * np.sign(np.sin((xx + 2 * yy) / 6.0))
    rgb = np.stack([rings, 0.5 * (rings + stripes), 255 * xx / size], axis=2)
    return np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------- NSS


@pytest.fixture(scope="module")
def nss() -> NSSBackbone:
    return NSSBackbone()


@pytest.fixture(scope="module")
def nss_pano() -> NSSBackbone:
    return NSSBackbone(panorama=True)


def test_nss_shape_name_and_names(nss, nss_pano):
    features = nss(np.stack([_textured(seed=s) for s in range(3)]))
    assert nss.name == "nss-v3" and nss.device == "cpu"
    assert features.shape == (3, nss.dim) and features.dtype == np.float32
    assert nss.dim == len(nss.feature_names) == 61
    assert len(set(nss.feature_names)) == nss.dim
    assert not any(name.startswith("pano_") for name in nss.feature_names)
    # nss-pano: the same features first, then the 25-value whole-panorama block.
    assert nss_pano.name == "nss-pano-v3" and nss_pano.dim == 86
    assert nss_pano.feature_names[:nss.dim] == nss.feature_names


def test_default_global_descriptor_is_the_global_view_embedded(nss):
    """The paper's g: the backbone once on the whole ERP at low resolution, nothing more."""
    erp = _erp()
    np.testing.assert_array_equal(nss.global_features(erp, 32), nss(global_view(erp, 32)[None])[0])


def test_default_global_descriptor_hardly_sees_a_local_cap(nss, nss_pano):
    """Why the default drops the panorama block: blurring one 45-degree tile moves the block's
    tile-contrast features by far more than it moves the low-resolution global view's."""
    erp = _erp(128)
    local = erp.copy()
    local[48:80, 96:128] = cv2.GaussianBlur(erp, (0, 0), 2.0)[48:80, 96:128]
    plain = nss.global_features(local, 32) - nss.global_features(erp, 32)
    pano = nss_pano.global_features(local, 32) - nss_pano.global_features(erp, 32)
    np.testing.assert_allclose(pano[:nss.dim], plain, rtol=1e-6, atol=1e-6)
    assert np.abs(pano[nss.dim:]).max() > 3 * np.abs(plain).max()


@pytest.mark.parametrize(
    "image",
    [
        np.full((64, 64, 3), 128, np.uint8),  # flat grey
        np.zeros((64, 64, 3), np.uint8),  # black
        np.full((64, 64, 3), 255, np.uint8),  # saturated white
        np.dstack([np.full((32, 48), 255, np.uint8)] + [np.zeros((32, 48), np.uint8)] * 2),  # saturated red
        np.kron(np.eye(2, dtype=np.uint8) * 255, np.ones((16, 16), np.uint8))[..., None].repeat(3, 2),
        np.full((1, 1, 3), 7, np.uint8),
        np.array([[[0] * 3, [255] * 3, [0] * 3], [[255] * 3, [0] * 3, [9] * 3]], np.uint8),
        np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8),
    ],
    ids=["grey", "black", "white", "red", "checker", "1x1", "2x3", "5x7-noise"],
)
def test_nss_features_are_finite_on_degenerate_images(nss, image):
    features = nss(image[None])
    assert np.isfinite(features).all(), dict(zip(nss.feature_names, features[0]))


def test_nss_is_independent_of_batching_and_deterministic(nss):
    images = np.stack([_textured(seed=s) for s in range(5)])
    together = nss(images)
    np.testing.assert_array_equal(together, nss(images))
    chunked = NSSBackbone(batch_size=2)(images)
    one_by_one = np.concatenate([nss(im[None]) for im in images])
    np.testing.assert_allclose(chunked, together, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one_by_one, together, rtol=1e-4, atol=1e-5)


def test_nss_accepts_non_square_and_empty_batches(nss):
    assert nss(np.stack([_textured(64)[:, :48]] * 2)).shape == (2, nss.dim)
    assert nss(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, nss.dim)


def test_nss_responds_to_distortions_in_the_expected_direction(nss):
    clean = _textured(128)
    rng = np.random.default_rng(0)
    blurred = cv2.GaussianBlur(clean, (0, 0), 2.5)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    bright = np.clip(clean.astype(int) * 2 + 60, 0, 255).astype(np.uint8)
    feats = dict(zip(nss.feature_names, nss(np.stack([clean, blurred, noisy, bright])).T))
    assert feats["sharpness"][1] < feats["sharpness"][0] - 1.0
    assert feats["hf_ratio"][1] < feats["hf_ratio"][0]
    assert feats["noise_sigma"][2] > feats["noise_sigma"][0] + 1.0
    assert feats["s1_mscn_alpha"][2] > feats["s1_mscn_alpha"][0]
    assert feats["highlight_fraction"][3] > 0.3 > feats["highlight_fraction"][0]
    assert feats["mean_luminance"][3] > feats["mean_luminance"][0] + 0.2


def test_nss_global_statistics_match_their_definitions(nss):
    image = _textured(48)
    feats = dict(zip(nss.feature_names, nss(image[None])[0]))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    assert feats["mean_luminance"] == pytest.approx(grey.mean() / 255, abs=2e-3)
    assert feats["rms_contrast"] == pytest.approx(grey.std() / 255, abs=2e-3)
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert feats["colourfulness"] == pytest.approx(colourfulness, rel=1e-4)
    assert feats["entropy"] == pytest.approx(grey_entropy(image[None])[0], rel=1e-6)


def _gennorm(alpha: float, scale: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Generalised Gaussian samples: |x| = scale * Gamma(1/alpha, 1)^(1/alpha), random sign."""
    magnitude = scale * rng.gamma(1.0 / alpha, 1.0, size) ** (1.0 / alpha)
    return magnitude * rng.choice([-1.0, 1.0], size)


@pytest.mark.parametrize("alpha", [0.6, 1.0, 2.0, 4.0])
def test_ggd_fit_recovers_shape_and_variance(alpha):
    rng = np.random.default_rng(3)
    samples = _gennorm(alpha, 0.7, 200_000, rng).astype(np.float32)
    fitted_alpha, variance = _ggd_fit(samples.reshape(400, 500, 1))
    assert fitted_alpha[0] == pytest.approx(alpha, rel=0.05)
    assert variance[0] == pytest.approx(float(np.mean(samples.astype(np.float64) ** 2)), rel=1e-3)


def test_aggd_fit_recovers_asymmetric_parameters():
    rng = np.random.default_rng(4)
    alpha, left_scale, right_scale = 0.8, 0.5, 1.5
    base = np.abs(_gennorm(alpha, 1.0, 300_000, rng))
    # In an AGGD each side's probability mass is proportional to its scale.
    side = rng.random(base.size) < left_scale / (left_scale + right_scale)
    samples = np.where(side, -left_scale * base, right_scale * base).astype(np.float32)
    fit_alpha, mean, left_var, right_var = (v[0] for v in _aggd_fit(samples.reshape(600, 500, 1)))
    assert fit_alpha == pytest.approx(alpha, rel=0.05)
    assert left_var == pytest.approx(float(np.mean(samples[samples < 0].astype(np.float64) ** 2)), rel=1e-3)
    assert right_var == pytest.approx(float(np.mean(samples[samples > 0].astype(np.float64) ** 2)), rel=1e-3)
    expected_mean = (right_scale - left_scale) * math.gamma(2 / alpha) / math.gamma(1 / alpha)
    assert mean == pytest.approx(expected_mean, rel=0.05)
    assert mean == pytest.approx(float(samples.astype(np.float64).mean()), rel=0.05)


def test_backbone_input_validation(nss):
    with pytest.raises(ValueError, match=r"uint8 of shape \(N, H, W, 3\)"):
        nss(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8 of shape \(N, H, W, 3\)"):
        nss(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="empty images"):
        nss(np.zeros((1, 0, 8, 3), np.uint8))


# ------------------------------------------------------------------------- helpers and specs


def test_global_view_resizes_with_inter_area():
    erp = np.stack([_textured(64)] * 2, axis=1).reshape(64, 128, 3)
    view = global_view(erp, 16)
    assert view.shape == (16, 32, 3) and view.dtype == np.uint8
    np.testing.assert_array_equal(view, cv2.resize(erp, (32, 16), interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        global_view(erp.astype(np.float32), 16)


def test_grey_entropy_known_values():
    flat = np.full((1, 8, 8, 3), 40, np.uint8)
    halves = np.zeros((1, 8, 8, 3), np.uint8)
    halves[:, :4] = 200
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    np.testing.assert_allclose(grey_entropy(np.concatenate([flat, halves])), [0.0, 1.0])
    assert grey_entropy(ramp)[0] == pytest.approx(8.0)


def test_make_backbone_nss_specs_round_trip():
    backbone = make_backbone("nss", batch_size=4)
    assert isinstance(backbone, NSSBackbone) and backbone.batch_size == 4
    assert make_backbone(backbone.name).name == "nss-v3"
    pano = make_backbone("nss-pano")
    assert isinstance(pano, NSSBackbone) and pano.panorama and make_backbone(pano.name).name == "nss-pano-v3"
    with pytest.raises(ValueError, match="nss-v0.*rebuild the feature cache"):
        make_backbone("nss-v0")
    # Caches built with an earlier definition must be rebuilt, not silently mixed.
    with pytest.raises(ValueError, match="nss-v1.*computes nss-v3.*rebuild the feature cache"):
        make_backbone("nss-v1")
    with pytest.raises(ValueError, match="nss-v2.*computes nss-v3.*--backbone nss$"):
        make_backbone("nss-v2")
    with pytest.raises(ValueError, match="nss-pano-v2.*computes nss-pano-v3.*--backbone nss-pano$"):
        make_backbone("nss-pano-v2")
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        make_backbone("resnet")
    with pytest.raises(ValueError, match="unknown backbone"):
        make_backbone("")


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------ DINOv2


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    """A randomly initialised 2-layer DINOv2 saved like a downloaded checkpoint."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=14, image_size=56)
    folder = tmp_path_factory.mktemp("tiny-dinov2")
    Dinov2Model(config).save_pretrained(folder)
    return folder


def test_dinov2_loads_local_folder_through_make_backbone(tiny_dinov2):
    backbone = make_backbone(f"dinov2:{tiny_dinov2}", device="cpu", batch_size=2)
    assert isinstance(backbone, DinoV2Backbone)
    assert backbone.name == f"dinov2-cls:{tiny_dinov2.resolve()}"
    assert backbone.dim == 32 and backbone.device == "cpu"
    images = np.stack([_textured(56, seed=s) for s in range(3)])
    features = backbone(images)
    assert features.shape == (3, 32) and features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_array_equal(features, backbone(images))
    np.testing.assert_allclose(backbone(images[1:2])[0], features[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(features[0], features[1])
    assert make_backbone(backbone.name, device="cpu").name == backbone.name


def test_dinov2_matches_a_manual_forward_pass(tiny_dinov2):
    from transformers import Dinov2Model

    images = np.stack([_textured(56, seed=s) for s in range(2)])
    backbone = DinoV2Backbone(str(tiny_dinov2), pooling="cls+mean", device="cpu")
    assert backbone.name == f"dinov2-clsmean:{tiny_dinov2.resolve()}" and backbone.dim == 64
    model = Dinov2Model.from_pretrained(tiny_dinov2).eval()
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model(pixel_values=(pixels - mean) / std).last_hidden_state
    expected = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1).numpy()
    np.testing.assert_allclose(backbone(images), expected, rtol=1e-4, atol=1e-5)


def test_dinov2_snaps_sizes_to_the_patch_grid(tiny_dinov2):
    backbone = DinoV2Backbone(str(tiny_dinov2), device="cpu")
    assert backbone._input_size(224, 448) == (224, 448)
    assert backbone._input_size(50, 101) == (56, 98)
    assert backbone._input_size(3, 3) == (14, 14)
    features = backbone(np.stack([_textured(50)[:, :45]] * 2))  # non-square, off-grid
    assert features.shape == (2, 32) and np.isfinite(features).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_dinov2_cuda_without_gpu_is_a_clear_error(tiny_dinov2):
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        DinoV2Backbone(str(tiny_dinov2), device="cuda")


def test_dinov2_missing_folder_says_how_to_supply_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = r"does not exist.*huggingface-cli download.*dinov2:DIR"
    with pytest.raises(BackboneLoadError, match=expected) as info:
        make_backbone(f"dinov2:{tmp_path / 'no-such-folder'}", device="cpu")
    assert "no-such-folder" in str(info.value)
    with pytest.raises(BackboneLoadError, match="huggingface-cli download"):
        make_backbone(f"dinov2:{tmp_path}", device="cpu")  # exists but holds no checkpoint


def test_dinov2_rejects_other_model_types(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=28, patch_size=14)).save_pretrained(tmp_path)
    with pytest.raises(BackboneLoadError, match="expected a DINOv2 checkpoint, found model_type 'vit'"):
        DinoV2Backbone(str(tmp_path), device="cpu")


# ------------------------------------------------------------------------------------ fusion


def test_fusion_concatenates_parts(tiny_dinov2, nss):
    fusion = make_backbone(f"nss+dinov2:{tiny_dinov2}", device="cpu")
    assert isinstance(fusion, FusionBackbone)
    assert fusion.name == f"nss-v3+dinov2-cls:{tiny_dinov2.resolve()}"
    assert fusion.dim == nss.dim + 32
    images = np.stack([_textured(56, seed=s) for s in range(2)])
    dino = DinoV2Backbone(str(tiny_dinov2), device="cpu")
    np.testing.assert_allclose(fusion(images), np.concatenate([nss(images), dino(images)], axis=1), rtol=1e-5)
    assert make_backbone(fusion.name, device="cpu").name == fusion.name
    # The feature cache's parallel build only copies CPU-only, model-free backbones into workers.
    assert nss.parallel_safe and not dino.parallel_safe and not fusion.parallel_safe
    assert FusionBackbone([nss, NSSBackbone()]).parallel_safe
    with pytest.raises(ValueError, match="at least two"):
        FusionBackbone([nss])


# ------------------------------------------------------------------------ nss-v2 additions and nss-pano


def _erp(height: int = 128, seed: int = 0) -> np.ndarray:
    """A 2:1 textured panorama made of tiled _textured patches (no 8-periodic structure)."""
    tile = _textured(size=height, seed=seed)
    return np.ascontiguousarray(np.concatenate([tile, tile[:, ::-1]], axis=1))


def _feature(nss, features, name):
    return features[..., nss.feature_names.index(name)]


@pytest.mark.parametrize("shape", [(1, 2), (2, 4), (8, 16), (64, 128)])
@pytest.mark.parametrize("value", [0, 255])
def test_nss_global_features_are_finite_on_degenerate_panoramas(nss_pano, shape, value):
    erp = np.full((*shape, 3), value, np.uint8)
    features = nss_pano.global_features(erp, 4)
    assert features.shape == (nss_pano.dim,) and features.dtype == np.float32
    assert np.isfinite(features).all()


def test_panorama_block_is_zero_for_plain_images_and_filled_for_erps(nss_pano):
    erp = _erp()
    pano = [i for i, name in enumerate(nss_pano.feature_names) if name.startswith("pano_")]
    assert len(pano) == 25
    assert np.all(nss_pano(global_view(erp, 32)[None])[0, pano] == 0)
    full = nss_pano.global_features(erp, 32)
    assert np.any(full[pano] != 0)
    # Everything but the panorama block is the global view's embedding.
    rest = [i for i in range(nss_pano.dim) if i not in pano]
    np.testing.assert_allclose(full[rest], nss_pano(global_view(erp, 32)[None])[0, rest], rtol=1e-6)


def test_blockiness_responds_to_jpeg_at_native_resolution(nss_pano):
    erp = _erp(256)
    ok, buffer = cv2.imencode(".jpg", erp, [cv2.IMWRITE_JPEG_QUALITY, 15])
    assert ok
    jpeg = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    clean, coded = nss_pano.global_features(erp, 32), nss_pano.global_features(jpeg, 32)
    for name in ("pano_block_h", "pano_block_v", "pano_block_tile_median"):
        assert _feature(nss_pano, coded, name) > _feature(nss_pano, clean, name) + 0.1, name
    # A crop that shifts the grid by 3 pixels keeps it detectable (the phase is searched).
    shifted = np.ascontiguousarray(jpeg[:, 3:-5])
    assert _feature(nss_pano, nss_pano.global_features(shifted, 32), "pano_block_h") > _feature(nss_pano, clean, "pano_block_h") + 0.1


def test_band_ratios_fall_with_blur_and_rise_with_noise(nss):
    image = _textured(size=128)
    blurred = cv2.GaussianBlur(image, (0, 0), 1.5)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    f = nss(np.stack([image, blurred, noisy]))
    ratio = _feature(nss, f, "band_ratio_01")
    assert ratio[1] < ratio[0] - 0.5 < ratio[2] - 0.5
    assert _feature(nss, f, "band_ratio_12")[1] < _feature(nss, f, "band_ratio_12")[0]
    assert _feature(nss, f, "noise_rel")[2] > _feature(nss, f, "noise_rel")[0]


def test_tile_contrasts_flag_a_local_distortion(nss_pano):
    erp = _erp(128)
    local = erp.copy()
    # Blur one 45-degree tile near the equator: the tiles' spread of the band ratio grows.
    local[48:80, 96:128] = cv2.GaussianBlur(erp, (0, 0), 2.0)[48:80, 96:128]
    clean, damaged = nss_pano.global_features(erp, 32), nss_pano.global_features(local, 32)
    assert _feature(nss_pano, damaged, "pano_tile_r01_below") > _feature(nss_pano, clean, "pano_tile_r01_below") + 0.3


def test_exposure_quantiles_and_clipping(nss):
    image = _textured(size=64)
    bright = np.clip(image.astype(np.int32) + 120, 0, 255).astype(np.uint8)
    f = nss(np.stack([image, bright]))
    assert _feature(nss, f, "lum_p50")[1] > _feature(nss, f, "lum_p50")[0]
    assert _feature(nss, f, "rgb_clip_high")[1] > _feature(nss, f, "rgb_clip_high")[0]
    quantiles = f[:, [nss.feature_names.index(f"lum_p{q}") for q in (1, 10, 50, 90, 99)]]
    assert np.all(np.diff(quantiles, axis=1) >= 0)
