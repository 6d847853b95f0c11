"""The one exception type users see: a single line naming the problem and the fix."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable
from pathlib import Path


class MimzooError(Exception):
    """Bad input or state a user can fix. The CLI prints ``error: <message>`` and exits 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C inside a training loop, saying where it stopped; the CLI prints the message and exits 130.

    checkpoint: what the kept checkpoint holds (e.g. "step 200"), None where none was written yet."""

    def __init__(self, step: int, total: int, checkpoint: str | None) -> None:
        where = f"interrupted at step {step} of {total}"
        super().__init__(f"{where}; continue with --resume (from the checkpoint of {checkpoint})" if checkpoint
                         else f"{where}, before the first checkpoint; run the command again to start over")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A library exception's message as one line (torch, timm and httpx messages span several), cut to ``limit``,
    for quoting inside a MimzooError."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_a_zip(path: Path) -> str | None:
    """Why ``path`` is not a zip archive, in words, or None when it is one: npz packs and ``torch.save``'s files
    are zips, and the readers' own errors for other files mislead (numpy suggests unpickling a text file)."""
    with open(path, "rb") as file:
        head = file.read(2)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        return None
    return "a truncated zip archive: the end of the file is missing" if head == b"PK" else "not a zip archive"


def check_settings(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise the message of the first failed (ok, message) check: the validation of every config dataclass."""
    for ok, message in checks:
        if not ok:
            raise MimzooError(message)


def in_range(option: str, value: float, low: float, high: float = math.inf, low_open: bool = False,
             high_open: bool = False) -> tuple[bool, str]:
    """A :func:`check_settings` check that ``value`` is a finite number in the interval (open ends where asked),
    with a message naming ``option`` and the valid range."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and (
        (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if high == math.inf:
        valid = f"more than {low:g}" if low_open else f"at least {low:g}"
    else:
        valid = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return ok, f"{option} must be {valid}, not {value}"


def in_range_if_set(option: str, value: float | None, *bounds: float, **ends: bool) -> tuple[bool, str]:
    """:func:`in_range` for an option whose None means "the default"."""
    return (True, "") if value is None else in_range(option, value, *bounds, **ends)


SEED_MAX = 2**31 - 1  # numpy seeds take 32 bits; runs add the process rank to the seed


def valid_seed(seed: int) -> tuple[bool, str]:
    """A :func:`check_settings` check of ``--seed``: an integer numpy and torch both take, with room for ranks."""
    ok = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX
    return ok, f"--seed must be an integer from 0 to {SEED_MAX}, not {seed}"


def one_of(option: str, value: str, choices: Iterable[str]) -> tuple[bool, str]:
    """A :func:`check_settings` check that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    return value in choices, f"unknown {option} {value!r}; choose {', '.join(choices)}"
