"""Image files: listing, up-front validation, and decoding inside tf.data.

Every file is fully decoded once with PIL before a pipeline is built (JPEGs
at 1/8 scale, which still reads every byte of the entropy-coded stream), so
a truncated or corrupt file is skipped and reported, or raises in strict
mode, instead of stopping TensorFlow in the middle of an epoch.
"""

import concurrent.futures
import dataclasses
import os
import warnings

import tensorflow as tf
from PIL import Image

from kdkeras.data import transforms
from kdkeras.data.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")

# Formats that `tf.io.decode_image` reads; PIL opens more (TIFF...) that TF cannot.
_TF_FORMATS = ("BMP", "GIF", "JPEG", "PNG")
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SHOWN_IN_MESSAGES = 10


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """Size and native channel count of a readable image file."""

    path: str
    height: int
    width: int
    channels: int


def list_image_files(folder):
    """Image files under `folder`, recursively, in sorted order.

    Hidden files and folders (`.DS_Store`, `__MACOSX` of zip archives) and
    files without an image extension are ignored.

    Args:
        folder: Folder to walk.

    Returns:
        Sorted list of paths.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def _inspect(path):
    try:
        with Image.open(path) as im:
            if im.format not in _TF_FORMATS:
                return None, f"format {im.format} is not readable by TensorFlow (use PNG or JPEG)"
            width, height = im.size
            channels = 1 if im.mode in _GRAY_MODES else 3
            if im.format == "JPEG":
                im.draft("L" if channels == 1 else "RGB", (1, 1))
            im.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ...) on bad files.
        return None, f"{type(e).__name__}: {e}"
    return ImageHeader(path, height, width, channels), None


def inspect_images(paths, strict=False, source=None):
    """Decodes every file once and returns the readable ones.

    Args:
        paths: Image file paths.
        strict: If True, any unreadable file raises; otherwise unreadable files
            are skipped with one warning that gives their count and names.
        source: Dataset root or CSV named in messages.

    Returns:
        `(headers, skipped)`: an `ImageHeader` per readable file, in input
        order, and the list of skipped paths.

    Raises:
        ValueError: In strict mode, if a file cannot be decoded.
    """
    workers = min(32, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_inspect, paths))
    headers = [header for header, _ in results if header is not None]
    bad = [(path, reason) for path, (_, reason) in zip(paths, results) if reason is not None]
    if bad:
        where = f" in {source}" if source else ""
        lines = "; ".join(f"{path} ({reason})" for path, reason in bad[:_SHOWN_IN_MESSAGES])
        hidden = len(bad) - _SHOWN_IN_MESSAGES
        more = f"; and {hidden} more" if hidden > 0 else ""
        if strict:
            raise DataError(
                f"{len(bad)} unreadable image file(s){where}: {lines}{more}. "
                "Replace or delete them, or pass strict=False to skip them."
            )
        warnings.warn(
            f"Skipped {len(bad)} unreadable image file(s){where}: {lines}{more}. "
            "They are listed in info.skipped; pass strict=True to raise instead.",
            stacklevel=3,
        )
    return headers, [path for path, _ in bad]


def native_channels(headers):
    """1 if every image is grayscale, else 3 (gray images are then repeated)."""
    return 1 if all(h.channels == 1 for h in headers) else 3


def native_size(headers, source):
    """The common `(height, width)` of `headers`, or an error asking for `image_size`."""
    sizes = {(h.height, h.width) for h in headers}
    if len(sizes) == 1:
        return sizes.pop()
    examples = {}
    for h in headers:
        examples.setdefault((h.height, h.width), h.path)
        if len(examples) == 2:
            break
    shown = ", ".join(f"{p} is {w}x{hgt}" for (hgt, w), p in examples.items())
    raise DataError(
        f"Images in {source} have {len(sizes)} different sizes ({shown}); "
        "pass image_size=(height, width), e.g. image_size=224, to resize them."
    )


def _fit_channels(image, channels):
    # The channel count of a file is only known when it is decoded (a Kermany
    # folder mixes gray and RGB JPEGs), so the conversion is chosen at run time.
    image = tf.cast(image, tf.float32)
    n = tf.shape(image)[-1]
    if channels == 1:
        converted = tf.cond(
            n < 3,
            lambda: image[..., :1],
            lambda: transforms.to_channels(tf.ensure_shape(image[..., :3], [None, None, 3]), 1),
        )
    else:
        converted = tf.cond(
            n < 3,
            lambda: tf.repeat(image[..., :1], 3, axis=-1),
            lambda: image[..., :3],
        )
    return tf.ensure_shape(converted, [None, None, channels])


def jpeg_scale_denominator(headers, image_size):
    """Largest JPEG DCT scaling (1, 2, 4 or 8) that keeps every image at least `image_size`.

    libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size almost for free;
    an X-ray of 2000 px resized to 224 px then needs a 4x smaller resize.

    Args:
        headers: `ImageHeader`s of the files.
        image_size: Target `(height, width)`.

    Returns:
        The denominator to pass as `decode_image_file(..., jpeg_ratio=)`.
    """
    height, width = image_size
    smallest_h = min(h.height for h in headers)
    smallest_w = min(h.width for h in headers)
    ratio = 1
    for candidate in (2, 4, 8):
        if smallest_h // candidate >= height and smallest_w // candidate >= width:
            ratio = candidate
    return ratio


def decode_image_file(path, channels, image_size, jpeg_ratio=1):
    """Reads and decodes one image file inside a tf.data pipeline.

    JPEG, PNG (8 or 16 bit), BMP and GIF (first frame); gray, gray+alpha, RGB
    or RGBA. 16-bit PNGs are scaled to [0, 255] (`v / 257`). Files already at
    `image_size` keep their exact pixels; others are resized. The result is
    rounded to uint8, the representation that pipelines cache.

    Args:
        path: Scalar string tensor.
        channels: 1 or 3, the channels to return.
        image_size: `(height, width)` to return.
        jpeg_ratio: Decode JPEGs at 1/`jpeg_ratio` of their size before
            resizing (see `jpeg_scale_denominator`).

    Returns:
        uint8 tensor `(height, width, channels)`.
    """
    contents = tf.io.read_file(path)
    is_png16 = tf.logical_and(
        tf.equal(tf.strings.substr(contents, 0, 8), _PNG_SIGNATURE),
        tf.equal(tf.strings.substr(contents, 24, 1), b"\x10"),
    )

    def decode_8bit():
        if jpeg_ratio == 1:
            return tf.io.decode_image(contents, expand_animations=False)
        return tf.cond(
            tf.io.is_jpeg(contents),
            lambda: tf.io.decode_jpeg(contents, ratio=jpeg_ratio),
            lambda: tf.io.decode_image(contents, expand_animations=False),
        )

    image = tf.cond(
        is_png16,
        lambda: tf.cast(tf.io.decode_png(contents, dtype=tf.uint16), tf.float32) / 257.0,
        lambda: tf.cast(decode_8bit(), tf.float32),
    )
    image = _fit_channels(image, channels)
    height, width = image_size
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
    image = tf.cond(same_size, lambda: image, lambda: transforms.resize(image, image_size))
    return tf.ensure_shape(transforms.to_uint8(image), [height, width, channels])
