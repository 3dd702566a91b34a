"""The RoI crop: context margin, square growth, zero padding, resizing."""

import cv2
import numpy as np
import pytest

from usmtl.data.manifest import Box
from usmtl.data.roi import crop_roi, crop_window, load_roi, roi_window


def ramp(height=60, width=80, channels=None):
    image = (np.arange(height * width).reshape(height, width) % 251 + 1).astype(np.uint8)
    if channels:
        image = np.stack([image, 255 - image, image // 2][:channels], axis=2)
    return image


@pytest.mark.parametrize("box, margin, square, window", [
    (Box(10, 20, 50, 40), 0.0, False, (10, 20, 50, 40)),
    (Box(10, 20, 50, 40), 0.1, False, (6, 18, 54, 42)),
    (Box(10, 20, 50, 40), 0.25, False, (0, 15, 60, 45)),
    (Box(10, 20, 50, 40), 0.0, True, (10, 10, 50, 50)),      # 40x20 -> 40x40
    (Box(10, 20, 50, 40), 0.1, True, (6, 6, 54, 54)),        # 48x24 -> 48x48
    (Box(20, 10, 30, 50), 0.0, True, (5, 10, 45, 50)),       # tall 10x40 -> 40x40
    (Box(0, 0, 10, 10), 0.5, True, (-5, -5, 15, 15)),        # past the image corner
])
def test_roi_window(box, margin, square, window):
    assert roi_window(box, margin, square) == window


@pytest.mark.parametrize("square", [True, False])
def test_empty_box_gives_one_pixel(square):
    x0, y0, x1, y1 = roi_window(Box(5, 5, 5, 5), 0.1, square)
    assert (x1 - x0, y1 - y0) == (1, 1) and 4 <= x0 <= 5 and 4 <= y0 <= 5
    assert crop_roi(ramp(), Box(5, 5, 5, 5), 0.1, square, size=8).shape == (8, 8)


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.2, 0.25, 0.33])
@pytest.mark.parametrize("x", [0, 1, 2, 7])
def test_square_window_is_square(margin, x):
    for width in range(1, 35):
        for height in range(1, 35):
            x0, y0, x1, y1 = roi_window(Box(x, x + 3, x + width, x + 3 + height), margin, True)
            assert x1 - x0 == y1 - y0, (width, height, margin, (x0, y0, x1, y1))
            side = max(width, height) * (1 + 2 * margin)
            assert abs((x1 - x0) - side) <= 0.5 + 1e-9
            # the window contains the box
            assert x0 <= x and y0 <= x + 3 and x1 >= x + width and y1 >= x + 3 + height


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.3])
def test_window_is_centred_on_the_box(margin):
    box = Box(13, 7, 41, 29)
    x0, y0, x1, y1 = roi_window(box, margin, square=True)
    assert abs((x0 + x1) / 2 - (box.x_min + box.x_max) / 2) <= 0.5
    assert abs((y0 + y1) / 2 - (box.y_min + box.y_max) / 2) <= 0.5


@pytest.mark.parametrize("channels", [None, 3])
def test_crop_exact_pixels(channels):
    image = ramp(channels=channels)
    box = Box(10, 20, 50, 40)
    crop = crop_roi(image, box, margin=0.0, square=False, size=None)
    np.testing.assert_array_equal(crop, image[20:40, 10:50])
    assert crop.dtype == image.dtype


def test_crop_with_margin_native_size():
    image = ramp()
    crop = crop_roi(image, Box(10, 20, 50, 40), margin=0.1, square=False, size=None)
    np.testing.assert_array_equal(crop, image[18:42, 6:54])


def test_square_crop_keeps_aspect():
    """A 40x20 box becomes a square 40x40 window: the mass keeps its shape when resized."""
    image = np.zeros((100, 100), np.uint8)
    image[40:60, 30:70] = 255  # the 40x20 lesion
    box = Box(30, 40, 70, 60)
    window = crop_roi(image, box, margin=0.0, square=True, size=None)
    assert window.shape == (40, 40)
    np.testing.assert_array_equal(window, image[30:70, 30:70])
    resized = crop_roi(image, box, margin=0.0, square=True, size=80)
    lesion = Box.from_mask(resized > 127)
    assert (lesion.width, lesion.height) == (80, 40)  # still twice as wide as tall
    squashed = Box.from_mask(crop_roi(image, box, margin=0.0, square=False, size=80) > 127)
    assert (squashed.width, squashed.height) == (80, 80)  # without square: distorted


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
@pytest.mark.parametrize("channels", [None, 3])
def test_padding_outside_the_image(corner, channels):
    image = ramp(40, 50, channels) | 1  # no zero pixel inside the image
    box = Box(0, 0, 10, 10) if corner == "top_left" else Box(40, 30, 50, 40)
    crop = crop_roi(image, box, margin=0.5, square=True, size=None)
    assert crop.shape[:2] == (20, 20)
    assert crop.shape[2:] == image.shape[2:]
    if corner == "top_left":
        assert (crop[:5] == 0).all() and (crop[:, :5] == 0).all()
        np.testing.assert_array_equal(crop[5:, 5:], image[:15, :15])
    else:
        assert (crop[15:] == 0).all() and (crop[:, 15:] == 0).all()
        np.testing.assert_array_equal(crop[:15, :15], image[25:, 35:])


def test_crop_window_entirely_outside():
    image = ramp(channels=3)
    crop = crop_window(image, (100, 100, 110, 105))
    assert crop.shape == (5, 10, 3) and not crop.any()
    crop = crop_window(image, (-20, -20, -10, -15))
    assert crop.shape == (5, 10, 3) and not crop.any()


def test_crop_window_larger_than_the_image():
    image = ramp(10, 12)
    crop = crop_window(image, (-2, -3, 14, 13))
    assert crop.shape == (16, 16)
    np.testing.assert_array_equal(crop[3:13, 2:14], image)
    assert crop.sum() == image.astype(int).sum()


@pytest.mark.parametrize("size", [16, 64, 256])
@pytest.mark.parametrize("channels", [None, 3])
@pytest.mark.parametrize("square", [True, False])
def test_output_size_and_dtype(size, channels, square):
    image = ramp(channels=channels)
    crop = crop_roi(image, Box(5, 8, 45, 30), margin=0.1, square=square, size=size)
    expected = (size, size) if channels is None else (size, size, 3)
    assert crop.shape == expected
    assert crop.dtype == np.uint8


def test_single_channel_keeps_its_axis():
    image = ramp()[:, :, None]
    assert crop_roi(image, Box(5, 5, 25, 25), size=32).shape == (32, 32, 1)


def test_uniform_image_stays_uniform():
    image = np.full((50, 50, 3), 77, np.uint8)
    crop = crop_roi(image, Box(10, 10, 40, 30), margin=0.1, square=True, size=64)
    assert (crop == 77).all()


def test_load_roi(tmp_path):
    grey = ramp()
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, grey)
    crop = load_roi(path, Box(10, 20, 50, 40), 0.0, False, 40)
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    native = crop_roi(np.repeat(grey[:, :, None], 3, axis=2), Box(10, 20, 50, 40), 0.0, False, 40)
    np.testing.assert_array_equal(crop, native)
