import cv2
import numpy as np
import pytest

from rl_scaniqa.envs.data.imageio import as_erp_array, read_erp, write_image
from rl_scaniqa.envs.errors import ImageError


def _panorama(height: int = 64, width: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus texture: compresses like a photo, not like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 7.0 + yy / 5.0)], axis=2) * 200
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"])
def test_round_trip_every_supported_format(tmp_path, suffix):
    rgb = _panorama()
    path = tmp_path / f"pano{suffix}"
    write_image(path, rgb)
    out = read_erp(path)
    assert out.dtype == np.uint8 and out.shape == (64, 128, 3) and out.flags.c_contiguous
    tolerance = 0 if suffix in (".png", ".tif", ".tiff") else 12  # lossy codecs
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_channel_order_is_rgb(tmp_path):
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    write_image(tmp_path / "red.png", rgb)
    on_disk = cv2.imread(str(tmp_path / "red.png"))
    assert on_disk[0, 0].tolist() == [0, 0, 200]  # OpenCV sees BGR
    assert read_erp(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: file not found"):
        read_erp(tmp_path / "missing.png")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    with pytest.raises(ImageError, match=r"notes\.png: not a supported image"):
        read_erp(path)


def test_empty_file_and_directory(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_erp(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        read_erp(tmp_path)


def test_corrupt_png_body(tmp_path):
    path = tmp_path / "corrupt.png"
    write_image(path, _panorama())
    data = bytearray(path.read_bytes())
    data[60:200] = bytes(140)  # zero out compressed data but keep the IEND trailer
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"corrupt\.png: PNG data is corrupt"):
        read_erp(path)


@pytest.mark.parametrize("suffix, fraction", [(".jpg", 0.6), (".jpg", 0.98), (".png", 0.6), (".png", 0.995),
                                              (".webp", 0.7)])
def test_truncated_files_are_detected(tmp_path, suffix, fraction):
    path = tmp_path / f"cut{suffix}"
    write_image(path, _panorama(128, 256))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ImageError, match=rf"cut\{suffix}: truncated"):
        read_erp(path)


def test_jpeg_with_trailing_bytes_is_accepted(tmp_path):
    path = tmp_path / "tail.jpg"
    write_image(path, _panorama())
    path.write_bytes(path.read_bytes() + b"\x00" * 16)  # some cameras pad after EOI
    assert read_erp(path).shape == (64, 128, 3)


def test_wrong_aspect_ratio_states_size_and_ratio(tmp_path):
    path = tmp_path / "wide.png"
    write_image(path, _panorama(200, 300))
    with pytest.raises(ImageError, match=r"wide\.png: size 300x200 .*1\.500:1.*must be 2:1"):
        read_erp(path)


def test_near_two_to_one_is_resampled(tmp_path):
    path = tmp_path / "near.png"
    write_image(path, _panorama(100, 201))  # 0.5 % off
    out = read_erp(path)
    assert out.shape == (100, 200, 3)
    with pytest.raises(ImageError, match="within 0.1%"):
        read_erp(path, aspect_tolerance=0.001)


def test_grayscale_becomes_rgb(tmp_path):
    grey = _panorama()[..., 1]
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    out = read_erp(tmp_path / "grey.png")
    assert out.shape == (64, 128, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


def test_rgba_drops_alpha(tmp_path):
    rgb = _panorama()
    alpha = np.zeros(rgb.shape[:2], np.uint8)  # fully transparent: colour must survive untouched
    bgra = np.dstack([rgb[..., ::-1], alpha])
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(read_erp(tmp_path / "rgba.png"), rgb)


def test_grey_alpha_array_drops_alpha():
    grey_alpha = np.dstack([np.full((4, 8), 77, np.uint8), np.zeros((4, 8), np.uint8)])
    assert (as_erp_array(grey_alpha) == 77).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([0, 257, 32896, 65535], np.uint16)  # -> 0, 1, 128, 255
    bgr16 = np.broadcast_to(np.tile(values, 2)[None, :, None], (4, 8, 3)).copy()
    bgr16[..., 0] = bgr16[:, ::-1, 0]  # blue reversed, to check the channel order too
    cv2.imwrite(str(tmp_path / "deep.png"), bgr16)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = read_erp(tmp_path / "deep.png")
    assert out.dtype == np.uint8
    assert out[0, :4, 0].tolist() == [0, 1, 128, 255]  # red
    assert out[0, 4:, 2].tolist() == [255, 128, 1, 0]  # blue


def test_array_checks_name_the_array():
    with pytest.raises(ImageError, match="viewport-3: unsupported sample type float32"):
        as_erp_array(np.zeros((4, 8, 3), np.float32), "viewport-3")
    with pytest.raises(ImageError, match=r"<array>: unsupported image shape \(4, 8, 5\)"):
        as_erp_array(np.zeros((4, 8, 5), np.uint8))
    with pytest.raises(ImageError, match="size 4x4"):
        as_erp_array(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageError, match="expected a numpy array"):
        as_erp_array([[0, 0]])  # type: ignore[arg-type]


def test_array_already_valid_is_not_copied():
    rgb = _panorama()
    assert np.shares_memory(as_erp_array(rgb), rgb)


def test_write_image_rejects_bad_input_and_keeps_old_file(tmp_path):
    target = tmp_path / "keep.png"
    write_image(target, _panorama())
    before = target.read_bytes()
    with pytest.raises(ImageError, match=r"keep\.png: expected an \(H, W, 3\)"):
        write_image(target, np.zeros((4, 8, 4), np.uint8))
    with pytest.raises(ImageError, match="expected a uint8 array"):
        write_image(target, np.zeros((4, 8, 3), np.float64))
    with pytest.raises(ImageError, match="unsupported extension '.gif'"):
        write_image(tmp_path / "x.gif", _panorama())
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
