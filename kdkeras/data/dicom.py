"""DICOM images as kdkeras pixels: modality rescale, VOI windowing, MONOCHROME1 inversion.

Needs `pydicom` (`pip install kdkeras[dicom]`). A DICOM file stores raw
detector values; what a radiologist sees (and what the PNG and JPEG files of
public datasets were exported from) is those values after the modality LUT
(`RescaleSlope` / `RescaleIntercept`, e.g. to Hounsfield units) and the VOI
LUT (the window, or an explicit lookup table), displayed bright for high
values unless the photometric interpretation is `MONOCHROME1` (X-ray film
convention: high values dark). `read_dicom` applies the three, in that order,
with `pydicom.pixels.apply_modality_lut` and `apply_voi_lut`, and maps the
displayed range to [0, 255]. Before anything is decoded the header's pixel
count is held to the limit PNG and JPEG files get (`check_pixel_count`), and
a file without the 128-byte preamble of DICOM Part 10 is read if its
elements parse.
"""

import numpy as np

from kdkeras.data.errors import DataError

DICOM_EXTENSIONS = (".dcm", ".dicom")
_MAGIC_OFFSET = 128  # A DICOM Part 10 file starts with a 128-byte preamble, then "DICM".


def is_dicom(path):
    """Whether `path` is a DICOM Part 10 file (by its "DICM" marker, not its name)."""
    try:
        with open(path, "rb") as f:
            f.seek(_MAGIC_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom(path):
    """Reads a single-frame DICOM image as float32 pixels in [0, 255].

    Grayscale: modality LUT, then VOI LUT (window or table; the file's first
    one), then `MONOCHROME1` inverted so that high means bright, then the
    displayed range scaled to [0, 255]. The displayed range is the VOI
    output's: the window maps to the full range, a table's entries span
    their declared bits; without a VOI module it is the image's own minimum
    to maximum. RGB images are returned as stored.

    Args:
        path: A DICOM file.

    Returns:
        float32 array `(H, W, 1)` (grayscale) or `(H, W, 3)` (RGB).

    Raises:
        ImportError: pydicom is not installed (the message says how).
        DataError: A file without pixel data, a header declaring more
            pixels than `PIL.Image.MAX_IMAGE_PIXELS` (checked before
            decoding), a multi-frame file, or a photometric interpretation
            kdkeras does not read.
    """
    ds = _read_dataset(path)
    check_pixel_count(path, ds)
    if "PixelData" not in ds:
        raise DataError(_no_pixels(path, ds))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{path} holds {frames} frames (a volume or a cine loop); kdkeras classifies single "
            "images: export the frame or slice to classify as its own file."
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    pixels = ds.pixel_array  # pydicom converts YBR colour to RGB
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        return _scale_rgb(pixels, ds)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(
            f"{path}: PhotometricInterpretation {photometric!r} is not read by kdkeras; "
            "use MONOCHROME1, MONOCHROME2 or RGB images."
        )
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
    low, high = _displayed_range(ds, values)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return (255.0 * scaled).astype(np.float32)[..., np.newaxis]


def read_header(path):
    """A DICOM file's elements without its pixel data, checked like an image header.

    Raises:
        ImportError: pydicom is not installed (the message says how).
        DataError: A file pydicom cannot parse, or whose declared pixel count
            is over the limit PNG and JPEG files get (`check_pixel_count`).
    """
    ds = _read_dataset(path, stop_before_pixels=True)
    check_pixel_count(path, ds)
    return ds


def check_pixel_count(path, ds):
    """Refuses a file whose header declares more pixels than `PIL.Image.MAX_IMAGE_PIXELS`.

    Rows x Columns x SamplesPerPixel x NumberOfFrames, read before any
    decoding: a 1.5 MB RLE file can declare 10000 x 10000 pixels (GBs once
    decoded). The limit is the one PNG and JPEG files get.
    """
    from PIL import Image

    def number(key, default):
        value = ds.get(key, default)
        try:
            return max(int(value if value not in (None, "") else default), 0)
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: its {key} is {value!r}, not a number: the header is damaged.") from e

    shape = [number(k, d) for k, d in (("Rows", 0), ("Columns", 0), ("SamplesPerPixel", 1), ("NumberOfFrames", 1))]
    count, limit = int(np.prod(shape, dtype=object)), Image.MAX_IMAGE_PIXELS
    if limit and count > limit:
        raise DataError(
            f"{path}: its header declares {shape[0]}x{shape[1]} pixels x {shape[2]} sample(s) x "
            f"{shape[3]} frame(s) = {count:,} values, over PIL.Image.MAX_IMAGE_PIXELS = {limit:,} "
            "(the limit PNG and JPEG files get); downsample it, or raise that limit if you trust the file."
        )


def _read_dataset(path, stop_before_pixels=False):
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as e:
        raise ImportError(
            f"Reading {path} needs pydicom: `pip install kdkeras[dicom]` (or `pip install pydicom`)."
        ) from e
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        # No 128-byte preamble and "DICM" marker: valid in older files, which start with their elements.
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        if "SOPClassUID" not in ds and "Rows" not in ds:
            raise DataError(f"{path} is not a DICOM file: no DICM marker and no DICOM image element.") from None
        return ds


def _no_pixels(path, ds):
    sop = ds.get("SOPClassUID")
    if sop is not None and "Image" not in getattr(sop, "name", ""):
        return f"{path} is a DICOM {getattr(sop, 'name', sop)} object, not an image: it has no pixel data to classify."
    return f"{path} has no pixel data element: the file is damaged or truncated; export it again from its source."


def _displayed_range(ds, values):
    from pydicom.pixels import apply_voi_lut

    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
        # apply_voi_lut prefers the table; its entries span the bits it declares.
        return 0.0, float(2 ** int(lut[0].LUTDescriptor[2]) - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # The window maps to pydicom's [y_min, y_max], whatever the image holds:
        # its ends are where everything below and above the window lands.
        ends = apply_voi_lut(np.array([-np.inf, np.inf]), ds)
        return float(ends[0]), float(ends[1])
    return float(values.min()), float(values.max())


def _scale_rgb(pixels, ds):
    bits = int(ds.get("BitsStored", 8))
    return (pixels.astype(np.float64) * (255.0 / (2**bits - 1))).astype(np.float32)
