"""`argparse` types shared by `kdkeras` and the benchmark commands.

Each refuses a bad value while the arguments are parsed, so that a command that
trains or times for minutes stops at once, naming the argument, rather than
failing when it writes its result.
"""

import argparse
import os


def positive_int(text):
    """Reads an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_folder(text):
    """Reads a folder to write into (created if missing), refusing one that exists as a file.

    Benchmarks write their results last: a wrong path must be named before the work, not after.
    """
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder; pass a folder (created if missing)")
    return text


def output_file(text):
    """Reads a file to write (its folder created if missing), refusing a folder or a path under a file."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder; pass the path of the file to write")
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text} lies under {parent}, which is a file, not a folder")
    return text
