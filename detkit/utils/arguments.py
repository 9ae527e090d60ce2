"""argparse types shared by the commands under ``tools/``: each refuses, while the command line is
parsed and so before any work, a value the command would fail on late or use silently wrong.
argparse then prints the usage and one line naming the option and the value, and exits with
status 2.

    parser.add_argument("--max-proposals", type=positive_int, default=2000)
    parser.add_argument("--confidence-threshold", type=probability, default=0.5)
    parser.add_argument("--output", type=output_file, required=True)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .paths import OutputPathError, check_output_file, check_output_folder


def positive_int(text: str) -> int:
    """A whole number of at least 1 (a count, a size, a number of rounds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive whole number")
    return value


def probability(text: str) -> float:
    """A finite number in [0, 1] (a score threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text} must be a number in [0, 1]")
    return value


def output_file(text: str) -> Path:
    """A file the command can write (:func:`detkit.utils.paths.check_output_file`)."""
    try:
        return check_output_file(text)
    except OutputPathError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def output_folder(text: str) -> Path:
    """A folder the command can write into
    (:func:`detkit.utils.paths.check_output_folder`)."""
    try:
        return check_output_folder(text)
    except OutputPathError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
