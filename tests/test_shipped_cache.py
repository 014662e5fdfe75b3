"""The feature cache shipped as package data: current, equal to what the code builds, safe to load."""

from __future__ import annotations

import lzma

import numpy as np
import pytest

from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.errors import CacheError
from rl_scaniqa.envs.features import provision
from rl_scaniqa.envs.features.backbones import make_backbone
from rl_scaniqa.envs.features.cache import CACHE_ARRAYS, load_cache_bytes
from rl_scaniqa.envs.features.provision import (
    ensure_default_data,
    load_shipped_cache,
    prepare_feature_cache,
    shipped_cache_resource,
)

REBUILD = "rebuild it with experiments/build_default_cache.py"


def test_shipped_cache_is_current():
    cache = load_shipped_cache()
    assert cache.backbone == make_backbone("nss").name, REBUILD
    assert cache.grid == ViewportGrid()
    assert cache.dataset == "synth360" and len(cache) == 60 and cache.augmentations == ()
    # Portable: image paths relative to the data home, none from the machine that built it.
    assert all(path.startswith("synth360-quick/images/") for path in cache.paths)


@pytest.mark.slow
def test_shipped_cache_equals_what_the_code_builds(tmp_path):
    _, built = ensure_default_data(tmp_path, progress=False)
    shipped = load_shipped_cache()
    assert shipped.image_ids == built.image_ids and shipped.ref_ids == built.ref_ids, REBUILD
    assert shipped.distortions == built.distortions and shipped.mos_scale == built.mos_scale
    for spec in CACHE_ARRAYS:
        expected, actual = getattr(shipped, spec.name), getattr(built, spec.name)
        if np.issubdtype(np.asarray(expected).dtype, np.floating):
            # Float features differ in the last bits between CPUs (AVX2 vs AVX-512 paths in
            # OpenCV and NumPy: up to 3e-7 measured); a change of the feature code moves them
            # by orders of magnitude more.
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{spec.name}: {REBUILD}")
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=f"{spec.name}: {REBUILD}")


def test_default_arguments_use_the_shipped_cache_other_arguments_do_not(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(provision, "ensure_default_data", lambda *a, **k: built.append(k) or (None, "built"))
    shipped = prepare_feature_cache("synth360", None, home=tmp_path, progress=False)
    assert len(shipped) == 60 and built == []
    assert prepare_feature_cache("synth360", None, home=tmp_path, augmentations=("weak",)) == "built"
    assert prepare_feature_cache("synth360", None, home=tmp_path, grid=ViewportGrid(n_lon=6)) == "built"
    assert prepare_feature_cache("synth360", None, home=tmp_path, quick_default=False) == "built"
    assert prepare_feature_cache("synth360", None, home=tmp_path, cache_dir=tmp_path / "c") == "built"


def test_a_damaged_shipped_cache_is_refused_and_the_default_built_instead(tmp_path, monkeypatch):
    damaged = tmp_path / "shipped.safetensors.xz"
    data = bytearray(lzma.decompress(shipped_cache_resource().read_bytes()))
    data[-1000] ^= 0xFF  # one feature or thumbnail byte: only the digests notice
    damaged.write_bytes(lzma.compress(bytes(data)))
    monkeypatch.setattr(provision, "shipped_cache_resource", lambda: damaged)
    with pytest.raises(CacheError, match=rf"{damaged.name}: array '\w+' does not match its stored digest"):
        load_shipped_cache()
    monkeypatch.setattr(provision, "ensure_default_data", lambda *a, **k: (None, "built"))
    with pytest.warns(UserWarning, match="building the default cache instead"):
        assert prepare_feature_cache("synth360", None, home=tmp_path, progress=False) == "built"


def test_truncated_or_missing_shipped_cache_names_the_file(tmp_path, monkeypatch):
    truncated = tmp_path / "cut.safetensors.xz"
    truncated.write_bytes(shipped_cache_resource().read_bytes()[:5000])
    monkeypatch.setattr(provision, "shipped_cache_resource", lambda: truncated)
    with pytest.raises(CacheError, match="cut.safetensors.xz: shipped default feature cache is missing or corrupt"):
        load_shipped_cache()
    monkeypatch.setattr(provision, "shipped_cache_resource", lambda: tmp_path / "gone.xz")
    with pytest.raises(CacheError, match="gone.xz: shipped default feature cache is missing"):
        load_shipped_cache()


def test_cache_bytes_with_a_cut_header_are_a_cache_error():
    with pytest.raises(CacheError, match="memory-copy: corrupt or truncated feature cache"):
        load_cache_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{", "memory-copy")
