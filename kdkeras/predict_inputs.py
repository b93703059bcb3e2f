"""The files behind `kdkeras predict`'s inputs, and what each one is, from its header.

Folders are walked whole (hidden files and `__MACOSX` folders excluded),
archives are extracted, also inside folders and inside other archives (up to
3 deep), and every file found is screened by its header before anything is
decoded: DICOM (by extension or its "DICM" marker), an image within
`PIL.Image.MAX_IMAGE_PIXELS`, or not an image at all (skipped, and said so).
"""

import os
import stat

from kdkeras.data import dicom as dicom_lib
from kdkeras.data import images as images_lib
from kdkeras.data.errors import DataError
from kdkeras.files import ARCHIVE_SUFFIXES, extract_archive

STATUS_OK = "ok"
STATUS_UNREADABLE = "unreadable"
STATUS_SKIPPED = "skipped"
STATUS_PENDING = "pending"
# Archives inside archives are extracted this deep (a zip of zips of scans); deeper ones are listed.
_ARCHIVE_DEPTH = 3
_NOT_AN_IMAGE = "not an image, DICOM file or archive (PNG, JPEG, BMP, GIF, DICOM, zip, tar)"


def expand_inputs(paths, workdir, depth=0):
    """Lists the files behind files, folders and archives.

    Args:
        paths: Input paths.
        workdir: Folder where archives are extracted (removed by the caller).
        depth: How many archives deep `paths` are (archives nest up to 3 deep).

    Returns:
        `[(shown_path, file_path, reason)]` in order: `shown_path` is what the
        user recognises (`scans.zip/a/1.png` for an archive member),
        `file_path` where it can be read, `reason` a string when the input is
        already known to be unusable (missing, or a damaged archive), else None.
    """
    found = []
    for index, path in enumerate(paths):
        path = os.fspath(path)
        if os.path.isdir(path):
            found.extend(expand_inputs(_folder_files(path), os.path.join(workdir, f"d{index}"), depth))
        elif path.lower().endswith(ARCHIVE_SUFFIXES) and os.path.isfile(path):
            found.extend(_archive_inputs(path, os.path.join(workdir, str(index)), depth))
        elif os.path.isfile(path) or os.path.islink(path):
            found.append((path, path, None))
        elif os.path.exists(path):
            found.append((path, path, "not a regular file but a FIFO, socket or device"))
        else:
            found.append((path, path, "file not found"))
    return found


def _archive_inputs(path, folder, depth):
    if depth >= _ARCHIVE_DEPTH:
        return [(path, path, f"an archive nested more than {_ARCHIVE_DEPTH} deep; extract it first")]
    try:
        extracted = extract_archive(path, folder)
    except Exception as e:  # zipfile, tarfile and the unsafe-member check raise many types
        return [(path, path, f"archive not extracted: {type(e).__name__}: {e}")]
    members = expand_inputs(_folder_files(extracted), os.path.join(folder, "nested"), depth + 1)
    return [(os.path.join(path, os.path.relpath(shown, extracted)), real, reason)
            for shown, real, reason in members]


def _folder_files(folder):
    """Every file under `folder`, sorted; archive metadata folders (`__MACOSX`) and hidden files excluded."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if not name.startswith("."))
    return found


def screen_file(path, image_size):
    """What a file is, from its header only: `(status, kind, detail)`.

    Args:
        path: The file.
        image_size: The `(height, width)` the model reads (sets a JPEG's scale).

    Returns:

        `status` is `"pending"` for an image or DICOM file whose header passed
        (`kind` `"image"` or `"dicom"`, `detail` the JPEG scale), else
        `"skipped"` or `"unreadable"` with the reason in `detail`.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return STATUS_UNREADABLE, None, f"{type(e).__name__}: {e.strerror}"
    if not stat.S_ISREG(mode):
        return STATUS_UNREADABLE, None, "not a regular file but a FIFO, socket or device"
    if path.lower().endswith(dicom_lib.DICOM_EXTENSIONS) or dicom_lib.is_dicom(path):
        try:
            dicom_lib.read_header(path)
        except (DataError, ImportError) as e:
            return STATUS_UNREADABLE, "dicom", str(e)
        except Exception as e:  # pydicom raises many types on damaged files
            return STATUS_UNREADABLE, "dicom", f"{type(e).__name__}: {e}"
        return STATUS_PENDING, "dicom", 1
    header, reason = images_lib.read_header(path, tuple(image_size))
    if header is not None:
        return STATUS_PENDING, "image", header.jpeg_ratio
    if reason.startswith("UnidentifiedImageError") and not path.lower().endswith(images_lib.IMAGE_EXTENSIONS):
        return STATUS_SKIPPED, None, _NOT_AN_IMAGE
    return STATUS_UNREADABLE, "image", reason


def check_output(path):
    """Refuses a CSV destination that cannot be written, before any image is read.

    Raises:
        DataError: An empty path, a folder, a path under a file, or a folder
            that is not writable.
    """
    path = os.fspath(path)
    if not path.strip():
        raise DataError("--out is empty: give the CSV to write, e.g. --out predictions.csv.")
    if os.path.isdir(path):
        example = os.path.join(path, "predictions.csv")
        raise DataError(f"--out {path} is a folder: give a file in it, e.g. --out {example}.")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise DataError(f"--out {path}: {folder} is a file, not a folder; choose another path for the CSV.")
    if not os.access(folder, os.W_OK):
        raise DataError(f"--out {path}: the folder {folder} is not writable; choose another path for the CSV.")
