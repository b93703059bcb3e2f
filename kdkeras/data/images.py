"""Image files: listing, up-front validation, and decoding inside tf.data.

Before a pipeline is built every file is decoded once by the very
TensorFlow ops the pipeline runs (same JPEG scale, same 16-bit path), so a
file that would stop an epoch is skipped and reported, or raises in strict
mode, with its name. PIL only reads headers (size, mode, format); a BMP,
whose TensorFlow decoder ignores palettes and compression, must also decode
to PIL's pixels.

Paths reach TensorFlow as bytes (`os.fsencode`), so a file name that is not
valid UTF-8 (an old Windows or latin-1 archive) loads like any other.
"""

import concurrent.futures
import dataclasses
import os
import re
import warnings

import numpy as np
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
_TF_MESSAGE_NOISE = re.compile(r"\{\{[^}]*\}\}|\[Op:.*$", re.DOTALL)
# DCT scale denominators libjpeg decodes at, besides 1.
_JPEG_SCALES = (2, 4, 8)


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """Size, native channel count and format of a readable image file.

    `jpeg_ratio` is the DCT scale denominator the pipeline decodes a JPEG at
    (see `jpeg_scale_denominator`); 1 for other formats.
    """

    path: str
    height: int
    width: int
    channels: int
    format: str = "PNG"
    jpeg_ratio: int = 1


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


def printable(text):
    """`text` with the undecodable bytes of file names (lone surrogates) shown as `\\xNN`."""
    return os.fsdecode(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _tf_message(error):
    # "{{function_node ...}} Invalid PNG data, size 75 [Op:DecodeImage] name: " -> the middle.
    return _TF_MESSAGE_NOISE.sub("", error.message).strip()


def _read_header(path, image_size):
    try:
        with Image.open(path) as im:
            if im.format not in _TF_FORMATS:
                return None, f"format {im.format} is not readable by TensorFlow (use PNG or JPEG)"
            width, height = im.size
            channels = 1 if im.mode in _GRAY_MODES else 3
            header = ImageHeader(path, height, width, channels, im.format)
            if im.format == "BMP":
                reason = _bmp_disagreement(im)
                if reason:
                    return None, reason
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ...) on bad files.
        return None, f"{type(e).__name__}: {e}"
    if image_size is not None and header.format == "JPEG":
        ratio = jpeg_scale_denominator(header, image_size)
        header = dataclasses.replace(header, jpeg_ratio=ratio)
    return header, None


def _bmp_disagreement(im):
    # TensorFlow's BMP decoder reads 24- and 32-bit pixels only: it refuses
    # 1-, 4- and 16-bit files and RLE, and shows an 8-bit palette's indices as
    # gray. Any BMP whose pixels it does not reproduce exactly is refused.
    with open(im.filename, "rb") as f:
        contents = f.read()
    try:
        decoded = tf.io.decode_bmp(contents).numpy()
    except tf.errors.OpError as e:
        return f"TensorFlow cannot decode this BMP ({_tf_message(e)}); convert it to PNG"
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[decoded.shape[-1]]
    expected = np.asarray(im.convert(mode)).reshape(decoded.shape[:2] + (-1,))
    if expected.shape != decoded.shape or not np.array_equal(expected, decoded):
        return (
            f"TensorFlow decodes this {im.mode}-mode BMP to other pixels than PIL "
            "(palette or bit-field BMP); convert it to PNG"
        )
    return None


def _decode_failures(headers):
    """`(path, reason)` of each file the pipeline's decoder fails on, or decodes at another size."""
    expected = [
        (-(-h.height // h.jpeg_ratio), -(-h.width // h.jpeg_ratio)) for h in headers
    ]
    ds = tf.data.Dataset.from_tensor_slices(
        (
            np.arange(len(headers)),
            tf_paths(h.path for h in headers),
            np.array([h.jpeg_ratio for h in headers], np.int32),
        )
    )
    # The shape depends on the decoded pixels, so the decode cannot be pruned;
    # `ignore_errors` drops each file whose decode raises.
    ds = ds.map(
        lambda i, path, ratio: (i, tf.shape(decode_contents(tf.io.read_file(path), ratio))[:2]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    ).ignore_errors()
    decoded = {int(i): tuple(shape) for i, shape in ds.as_numpy_iterator()}
    failures = []
    for i, header in enumerate(headers):
        if i not in decoded:
            failures.append((header.path, decode_error(header)))
        elif decoded[i] != expected[i]:
            failures.append(
                (header.path, f"TensorFlow decodes it at {decoded[i]}, its header says {expected[i]}")
            )
    return failures


def read_header(path, image_size=None):
    """One file's header, checked before any decoding: `(ImageHeader, None)` or `(None, reason)`.

    The checks of `inspect_images` that need no decoding (format, BMP
    pixels), plus the decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS`
    on the declared size, for callers that decode files one stream at a time.

    Args:
        path: An image file.
        image_size: The `(height, width)` it will be resized to (sets `jpeg_ratio`), or None.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        header, reason = _read_header(path, image_size)
    limit = Image.MAX_IMAGE_PIXELS
    if header is not None and limit and header.width * header.height > limit:
        return None, (
            f"{header.width}x{header.height} pixels is over PIL.Image.MAX_IMAGE_PIXELS = {limit:,}; "
            "resize it, or raise that limit if you trust the file"
        )
    return header, reason


def decode_error(header):
    """Why TensorFlow's decoder fails on a file whose header was read, as one line."""
    try:
        with open(header.path, "rb") as f:
            decode_contents(tf.constant(f.read()), tf.constant(header.jpeg_ratio))
    except tf.errors.OpError as e:
        return f"TensorFlow cannot decode it: {_tf_message(e)}"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return "TensorFlow failed to decode it once"


def tf_paths(paths):
    """File paths as a numpy array of bytes, the form tf.data takes them in."""
    # TensorFlow converts a str holding surrogate escapes (an undecodable byte
    # of a file name) to UTF-8 and fails; the bytes are the real name.
    return np.array([os.fsencode(p) for p in paths], dtype=object)


def inspect_images(paths, strict=False, source=None, image_size=None):
    """Checks that TensorFlow decodes every file, and returns the readable ones.

    PIL reads each header (format, size, mode); then every file is decoded
    by the pipeline's own TensorFlow decoder, at the JPEG scale the pipeline
    will use for `image_size`, so a file that passes cannot fail later.

    Args:
        paths: Image file paths.
        strict: If True, any unreadable file raises; otherwise unreadable files
            are skipped with one warning that gives their count and names.
        source: Dataset root or CSV named in messages.
        image_size: The `(height, width)` the pipeline resizes to, or None
            (native size); it sets each JPEG's `jpeg_ratio`.

    Returns:
        `(headers, skipped)`: an `ImageHeader` per readable file, in input
        order, and the list of skipped paths.

    Raises:
        DataError: In strict mode, if a file cannot be decoded.
    """
    workers = min(32, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: _read_header(p, image_size), paths))
    headers = [header for header, _ in results if header is not None]
    bad = [(path, reason) for path, (_, reason) in zip(paths, results) if reason is not None]
    if headers:
        failures = _decode_failures(headers)
        failed = {path for path, _ in failures}
        headers = [h for h in headers if h.path not in failed]
        order = {path: i for i, path in enumerate(paths)}
        bad = sorted(bad + failures, key=lambda item: order[item[0]])
    if bad:
        where = f" in {printable(source)}" if source else ""
        lines = printable("; ".join(f"{path} ({reason})" for path, reason in bad[:_SHOWN_IN_MESSAGES]))
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


def jpeg_scale_denominator(header, image_size):
    """Largest JPEG DCT scaling (1, 2, 4 or 8) that keeps an image at least `image_size`.

    libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain,
    at a fraction of the cost; a 2000-px X-ray bound for 224 px is then
    decoded at 250 px and resized from there. Each file gets its own scale,
    so one small image does not slow down the others.

    Args:
        header: The file's `ImageHeader`; non-JPEG files get 1.
        image_size: Target `(height, width)`.

    Returns:
        The denominator: `ImageHeader.jpeg_ratio` of the file.
    """
    if header.format != "JPEG":
        return 1
    height, width = image_size
    ratio = 1
    for candidate in _JPEG_SCALES:
        if header.height // candidate >= height and header.width // candidate >= width:
            ratio = candidate
    return ratio


def decode_contents(contents, jpeg_ratio):
    """float32 pixels of an encoded image: JPEGs at 1/`jpeg_ratio` scale, 16-bit PNGs / 257.

    The decoding step of `decode_image_file`, before channels and size are fitted.

    Args:
        contents: Scalar string tensor, the file's bytes.
        jpeg_ratio: 1, 2, 4 or 8 (int or scalar tensor).

    Returns:
        float32 tensor `(H, W, C)` in [0, 255].
    """
    jpeg_ratio = tf.cast(jpeg_ratio, tf.int32)
    is_png16 = tf.logical_and(
        tf.equal(tf.strings.substr(contents, 0, 8), _PNG_SIGNATURE),
        tf.equal(tf.strings.substr(contents, 24, 1), b"\x10"),
    )

    def decode_8bit():
        # `ratio` is an attribute of decode_jpeg, not an input: one branch per scale.
        index = tf.argmax(tf.equal(jpeg_ratio, _JPEG_SCALES), output_type=tf.int32)
        branches = [lambda r=r: tf.io.decode_jpeg(contents, ratio=r) for r in _JPEG_SCALES]
        return tf.cond(
            tf.logical_and(jpeg_ratio > 1, tf.io.is_jpeg(contents)),
            lambda: tf.switch_case(index, branches),
            lambda: tf.io.decode_image(contents, expand_animations=False),
        )

    return tf.cond(
        is_png16,
        lambda: tf.cast(tf.io.decode_png(contents, dtype=tf.uint16), tf.float32) / 257.0,
        lambda: tf.cast(decode_8bit(), tf.float32),
    )


def decode_image_file(path, channels, image_size, jpeg_ratio=1):
    """Reads and decodes one image file inside a tf.data pipeline.

    JPEG, PNG (8 or 16 bit), BMP (24 and 32 bit) and GIF (first frame);
    gray, gray+alpha, RGB or RGBA. 16-bit PNGs are scaled to [0, 255]
    (`v / 257`). Files already at `image_size` keep their exact pixels;
    others are resized. The result is rounded to uint8, the representation
    that pipelines cache.

    Args:
        path: Scalar string tensor (the file name's bytes; see `tf_paths`).
        channels: 1 or 3, the channels to return.
        image_size: `(height, width)` to return.
        jpeg_ratio: Decode a JPEG at 1/`jpeg_ratio` of its size before
            resizing: 1, 2, 4 or 8, an int or a scalar tensor (see
            `jpeg_scale_denominator`).

    Returns:
        uint8 tensor `(height, width, channels)`.
    """
    image = decode_contents(tf.io.read_file(path), jpeg_ratio)
    image = _fit_channels(image, channels)
    height, width = image_size
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
    image = tf.cond(same_size, lambda: image, lambda: transforms.resize(image, image_size))
    return tf.ensure_shape(transforms.to_uint8(image), [height, width, channels])
