"""Decoding and validation of image files (kdkeras.data.images)."""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kdkeras.data import images


def _save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return str(path)


def _decode(path, channels, size):
    return images.decode_image_file(tf.constant(path), channels, size).numpy()


@pytest.fixture
def image_files(tmp_path):
    """One file per supported format and mode, 12x16 pixels, known contents."""
    gray = np.tile(np.arange(16, dtype=np.uint8) * 16, (12, 1))
    rgb = np.stack([gray, 255 - gray, np.full_like(gray, 40)], axis=-1)
    rgba = np.concatenate([rgb, np.full_like(gray, 7)[..., None]], axis=-1)
    return {
        "gray_png": _save(tmp_path / "gray.png", gray),
        "rgb_png": _save(tmp_path / "rgb.png", rgb),
        "rgba_png": _save(tmp_path / "rgba.png", rgba),
        "gray16_png": _save(tmp_path / "gray16.png", gray.astype(np.uint16) * 257),
        "gray_jpeg": _save(tmp_path / "gray.jpeg", gray, quality=95),
        "rgb_jpeg": _save(tmp_path / "rgb.jpeg", rgb, quality=95),
        "rgb_bmp": _save(tmp_path / "rgb.bmp", rgb),
        "gray": gray,
        "rgb": rgb,
    }


def test_png_modes_decode_to_exact_pixels(image_files):
    gray, rgb = image_files["gray"], image_files["rgb"]
    np.testing.assert_array_equal(_decode(image_files["gray_png"], 1, (12, 16))[..., 0], gray)
    as_rgb = _decode(image_files["gray_png"], 3, (12, 16))
    np.testing.assert_array_equal(as_rgb, np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(_decode(image_files["rgb_png"], 3, (12, 16)), rgb)
    np.testing.assert_array_equal(_decode(image_files["rgba_png"], 3, (12, 16)), rgb)
    np.testing.assert_array_equal(_decode(image_files["rgb_bmp"], 3, (12, 16)), rgb)
    luma = np.round(rgb.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])).astype(np.uint8)
    np.testing.assert_array_equal(_decode(image_files["rgb_png"], 1, (12, 16))[..., 0], luma)


def test_16_bit_png_is_scaled_to_0_255(image_files):
    decoded = _decode(image_files["gray16_png"], 1, (12, 16))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[..., 0], image_files["gray"])


def test_jpeg_decodes_close_to_source_and_resizes(image_files):
    decoded = _decode(image_files["gray_jpeg"], 1, (12, 16)).astype(int)
    assert np.abs(decoded[..., 0] - image_files["gray"].astype(int)).max() <= 8
    small = _decode(image_files["rgb_jpeg"], 3, (6, 8))
    assert small.shape == (6, 8, 3) and small.dtype == np.uint8


def test_jpeg_dct_scaling_matches_full_decode(tmp_path):
    yy, xx = np.mgrid[0:256, 0:256]
    smooth = (127 + 100 * np.sin(xx / 20.0) * np.cos(yy / 30.0)).astype(np.uint8)
    path = _save(tmp_path / "big.jpeg", smooth, quality=95)
    header = images.ImageHeader(path, 256, 256, 1, "JPEG")
    assert images.jpeg_scale_denominator(header, (32, 32)) == 8
    assert images.jpeg_scale_denominator(header, (100, 64)) == 2
    assert images.jpeg_scale_denominator(header, (200, 200)) == 1
    png = images.ImageHeader(path, 256, 256, 1, "PNG")
    assert images.jpeg_scale_denominator(png, (32, 32)) == 1
    [checked], _ = images.inspect_images([path], image_size=(60, 60))
    assert checked.jpeg_ratio == 4
    reference = np.asarray(Image.open(path).resize((60, 60), Image.Resampling.BILINEAR, reducing_gap=None))
    for ratio in (1, 2, 4):
        decoded = images.decode_image_file(tf.constant(path), 1, (60, 60), jpeg_ratio=ratio).numpy()
        difference = np.abs(decoded[..., 0].astype(int) - reference.astype(int))
        assert difference.mean() < 1.0 and difference.max() <= 6, (ratio, difference.mean())


def test_pipeline_jpeg_scale_gives_the_full_decode_pixels(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    paths = []
    for i in range(3):
        base = 127 + 90 * np.sin(xx / (11.0 + 5 * i)) * np.cos(yy / 19.0)
        pixels = np.clip(base[..., None] + rng.normal(0, 4, (300, 400, 3)), 0, 255).astype(np.uint8)
        paths.append(_save(tmp_path / f"{i}.jpg", pixels, quality=92))
    headers, _ = images.inspect_images(paths, image_size=(64, 48))
    assert [h.jpeg_ratio for h in headers] == [4, 4, 4]
    for header in headers:
        scaled = images.decode_image_file(tf.constant(header.path), 3, (64, 48), header.jpeg_ratio)
        full = images.decode_image_file(tf.constant(header.path), 3, (64, 48), 1)
        difference = np.abs(scaled.numpy().astype(int) - full.numpy().astype(int))
        assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 6


def test_inspect_reports_corrupt_files(tmp_path, image_files):
    data = open(image_files["gray_jpeg"], "rb").read()
    truncated = tmp_path / "person3_virus_7.jpeg"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "IM-0001-0001.jpeg"
    garbage.write_bytes(b"this is not a JPEG")
    tiff = tmp_path / "scan.png"
    Image.fromarray(image_files["gray"]).save(tiff, format="TIFF")
    paths = [
        image_files["rgb_jpeg"], str(truncated), image_files["gray16_png"], str(garbage), str(tiff)
    ]
    expected = r"Skipped 3 unreadable image file\(s\) in root/"
    with pytest.warns(UserWarning, match=expected) as record:
        headers, skipped = images.inspect_images(paths, source="root/")
    message = str(record[0].message)
    assert "person3_virus_7.jpeg" in message and "IM-0001-0001.jpeg" in message
    assert "not readable by TensorFlow" in message
    assert skipped == [str(truncated), str(garbage), str(tiff)]
    assert [(h.path, h.height, h.width, h.channels) for h in headers] == [
        (image_files["rgb_jpeg"], 12, 16, 3),
        (image_files["gray16_png"], 12, 16, 1),
    ]
    with pytest.raises(ValueError, match=r"3 unreadable image file\(s\).*strict=False"):
        images.inspect_images(paths, strict=True)


def test_native_size_and_channels(tmp_path):
    a = images.ImageHeader(str(tmp_path / "a.jpeg"), 10, 20, 1)
    b = images.ImageHeader(str(tmp_path / "b.jpeg"), 10, 20, 3)
    c = images.ImageHeader(str(tmp_path / "c.jpeg"), 30, 40, 1)
    assert images.native_size([a, b], "root") == (10, 20)
    assert images.native_channels([a, c]) == 1
    assert images.native_channels([a, b]) == 3
    expected = r"2 different sizes \(.*a\.jpeg is 20x10, .*c\.jpeg is 40x30\)"
    with pytest.raises(ValueError, match=expected):
        images.native_size([a, c], "root")
    with pytest.raises(ValueError, match="pass image_size"):
        images.native_size([a, b, c], "root")


def test_list_image_files_skips_hidden_and_non_images(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    names = ("b.JPEG", "a.png", "sub/c.jpg", ".DS_Store", "notes.txt", "__MACOSX/._a.png", "._x")
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = [os.path.relpath(p, tmp_path) for p in images.list_image_files(tmp_path)]
    assert found == ["a.png", "b.JPEG", os.path.join("sub", "c.jpg")]


def _bmp(path, width, height, bits, compression, pixel_data, palette=b""):
    """A BITMAPINFOHEADER BMP built byte by byte, for the variants PIL cannot write."""
    offset = 14 + 40 + len(palette)
    header = b"BM" + (offset + len(pixel_data)).to_bytes(4, "little") + bytes(4)
    header += offset.to_bytes(4, "little")
    info = (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little")
    info += (1).to_bytes(2, "little") + bits.to_bytes(2, "little")
    info += compression.to_bytes(4, "little") + len(pixel_data).to_bytes(4, "little")
    info += (2835).to_bytes(4, "little") * 2 + (len(palette) // 4).to_bytes(4, "little") + bytes(4)
    path.write_bytes(header + info + palette + pixel_data)
    return str(path)


def _hostile_files(tmp_path):
    """The files of issue 16 that PIL's check passed and TensorFlow then failed on."""
    gray = np.tile(np.arange(16, dtype=np.uint8) * 16, (12, 1))
    png = open(_save(tmp_path / "source.png", gray), "rb").read()
    files = {}
    for cut in (1, 12, 21):
        files[f"png_minus_{cut}"] = tmp_path / f"png_minus_{cut}.png"
        files[f"png_minus_{cut}"].write_bytes(png[:-cut])
    idat = png.index(b"IDAT")
    length = int.from_bytes(png[idat - 4 : idat], "big")
    crc = idat + 4 + length
    bad_crc = png[:crc] + bytes(b ^ 0xFF for b in png[crc : crc + 4]) + png[crc + 4 :]
    files["png_bad_idat_crc"] = tmp_path / "bad_crc.png"
    files["png_bad_idat_crc"].write_bytes(bad_crc)
    files["bmp_1bit"] = tmp_path / "one_bit.bmp"
    Image.fromarray(gray > 100).save(files["bmp_1bit"])
    red = Image.new("P", (16, 12))
    red.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    files["bmp_8bit_palette_red"] = tmp_path / "palette.bmp"
    red.save(files["bmp_8bit_palette_red"])
    rows = b"".join((0x7C00).to_bytes(2, "little") * 16 for _ in range(12))  # 5-5-5 red
    files["bmp_16bit"] = _bmp(tmp_path / "sixteen.bmp", 16, 12, 16, 0, rows)
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    rle = b"".join(bytes((16, 200, 0, 0)) for _ in range(12)) + bytes((0, 1))
    files["bmp_rle8"] = _bmp(tmp_path / "rle8.bmp", 16, 12, 8, 1, rle, palette)
    return {name: str(path) for name, path in files.items()}


def test_hostile_files_are_refused_by_name_or_decoded_like_pil(tmp_path):
    hostile = _hostile_files(tmp_path)
    for name, path in hostile.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            headers, skipped = images.inspect_images([path], source="root/")
        if skipped:
            assert skipped == [path], name
            message = str(caught[0].message)
            assert os.path.basename(path) in message and "Skipped 1 unreadable" in message, name
            continue
        [header] = headers
        with Image.open(path) as im:
            expected = np.asarray(im.convert("L" if header.channels == 1 else "RGB"))
        decoded = images.decode_image_file(
            tf.constant(path), header.channels, (header.height, header.width)
        ).numpy()
        np.testing.assert_array_equal(decoded.reshape(expected.shape), expected, err_msg=name)
    # Every one of them used to pass the check and then stop TensorFlow or decode black.
    with pytest.warns(UserWarning, match=r"Skipped 8 unreadable image file\(s\)"):
        _, skipped = images.inspect_images(list(hostile.values()))
    assert sorted(skipped) == sorted(hostile.values())


def test_refusal_names_the_decoder_error(tmp_path):
    path = _hostile_files(tmp_path)["png_bad_idat_crc"]
    with pytest.raises(ValueError, match=r"bad_crc\.png \(TensorFlow cannot decode it: .+\)"):
        images.inspect_images([path], strict=True)
    palette = _hostile_files(tmp_path)["bmp_8bit_palette_red"]
    with pytest.raises(ValueError, match=r"palette\.bmp \(TensorFlow decodes this P-mode BMP .* PNG\)"):
        images.inspect_images([palette], strict=True)


def test_non_utf8_file_names_load_and_are_named(tmp_path):
    folder = os.fsencode(tmp_path)
    gray = np.tile(np.arange(16, dtype=np.uint8) * 16, (12, 1))
    good = os.fsdecode(os.path.join(folder, b"caf\xe9.png"))
    Image.fromarray(gray).save(good, format="PNG")
    bad = os.fsdecode(os.path.join(folder, b"ni\xf1o.png"))
    with open(bad, "wb") as f:
        f.write(b"not a png")
    assert os.fsdecode(os.path.join(folder, b"caf\xe9.png")) in images.list_image_files(tmp_path)
    with pytest.warns(UserWarning, match=r"ni\\xf1o\.png \(UnidentifiedImageError") as record:
        headers, skipped = images.inspect_images([good, bad])
    str(record[0].message).encode("utf-8")  # printable: no lone surrogate left in the message
    assert [h.path for h in headers] == [good] and skipped == [bad]
    path = tf.constant(images.tf_paths([good])[0])
    np.testing.assert_array_equal(images.decode_image_file(path, 1, (12, 16)).numpy()[..., 0], gray)
