"""Small PIL drawing helpers: Pillow's bundled font, wrapped text, a line plot with ticks, and saving.

mimzoo draws its figures with PIL alone (no matplotlib dependency); this is all the plotting it needs.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from itertools import cycle
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from mimzoo.engine.atomic import atomic_path
from mimzoo.engine.outputs import SOFTWARE, replaceable, writable_folder
from mimzoo.errors import MimzooError, one_line

FONT_SIZE = 13
INK, NOTE_INK, GRID_INK = (30, 30, 30), (160, 40, 40), (225, 225, 225)
# matplotlib's "tab10" colours, so curves look familiar
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
Series = dict[str, tuple[list[float], list[float]]]  # name -> (xs, ys)


@functools.cache
def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px: no system fonts needed."""
    return ImageFont.load_default(size=size)


def line_height(size: int = FONT_SIZE) -> int:
    return font(size).getbbox("Ag")[3] + 3


def wrap(text: str, width: float, size: int = FONT_SIZE) -> list[str]:
    """Greedy word wrap into lines at most ``width`` px wide (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font(size).getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten apart) inside [low, high]."""
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with just the significant digits that tell evenly spaced ticks apart (0.16665, 0.1667, 0.16675, not
    0.167 three times)."""
    if len(ticks) < 2:
        return [f"{t:.3g}" for t in ticks]
    step, largest = ticks[1] - ticks[0], max(abs(t) for t in ticks)
    magnitude = math.floor(math.log10(largest)) if largest else 0
    # down to the step's second digit (2.5 steps), and never fewer than the integer part (no 1e+03 for 1000)
    digits = max(1, magnitude + 1, magnitude - math.floor(math.log10(step)) + 2)
    return [f"{t:.{digits}g}" for t in ticks]


def _span(values: Sequence[float], margin: float = 0.0) -> tuple[float, float]:
    """(min, max) widened by ``margin`` of the range on each side, or around a single value so the axis has a
    length."""
    low, high = min(values), max(values)
    pad = (high - low) * margin if high > low else abs(low) * 0.1 or 1.0
    return low - pad, high + pad


def line_plot(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, series: Series,
              x_label: str = "step") -> None:
    """Draw ``series`` as lines in ``box`` (left, top, right, bottom): a title, axes with ticks and grid lines,
    and a legend when there is more than one series."""
    left, top, right, bottom = box
    text, lh = font(), line_height()
    draw.text(((left + right) / 2, top + 4), title, fill=INK, font=text, anchor="ma")
    draw.text(((left + right) / 2, bottom - 4), x_label, fill=INK, font=text, anchor="md")
    # a legend (more than one series) to the right of the axes, where it covers no curve
    legend_width = 30 + max(text.getlength(name) for name in series) if len(series) > 1 else 0
    x0, y0, x1, y1 = left + 64, top + lh + 10, right - 14 - legend_width, bottom - 2 * lh - 8  # labels outside
    xmin, xmax = _span([x for xs, _ in series.values() for x in xs])
    ymin, ymax = _span([y for _, ys in series.values() for y in ys], margin=0.05)  # curves clear of the frame

    def to_px(x: float, y: float) -> tuple[float, float]:
        return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0), y1 - (y - ymin) / (ymax - ymin) * (y1 - y0)

    y_ticks = nice_ticks(ymin, ymax)
    for tick, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        y = to_px(xmin, tick)[1]
        draw.line([(x0, y), (x1, y)], fill=GRID_INK)
        draw.text((x0 - 5, y), label, fill=INK, font=text, anchor="rm")
    x_ticks = nice_ticks(xmin, xmax)
    for tick, label in zip(x_ticks, tick_labels(x_ticks), strict=True):
        x = to_px(tick, ymin)[0]
        draw.line([(x, y0), (x, y1)], fill=GRID_INK)
        draw.text((x, y1 + 4), label, fill=INK, font=text, anchor="ma")
    draw.rectangle((x0, y0, x1, y1), outline=INK)
    for colour, (xs, ys) in zip(cycle(PALETTE), series.values()):
        points = [to_px(x, y) for x, y in zip(xs, ys, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        else:
            draw.ellipse([(points[0][0] - 3, points[0][1] - 3), (points[0][0] + 3, points[0][1] + 3)], fill=colour)
    if legend_width:
        legend_x = x1 + 34
        for i, (colour, name) in enumerate(zip(cycle(PALETTE), series)):
            y = y0 + i * lh
            draw.line([(legend_x - 22, y + lh / 2), (legend_x - 4, y + lh / 2)], fill=colour, width=3)
            draw.text((legend_x, y), name, fill=INK, font=text)


# the formats that carry mimzoo's mark, so a figure mimzoo wrote can be told from a user's and replaced
FIGURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def figure_path(path: Path) -> tuple[Path, str]:
    """Check that a figure can be written to ``path`` before any work: a .png or .jpg extension, a folder that can be
    written, and nothing there that mimzoo did not write. Returns the path, normalised (so ``new/../f.png`` creates
    no ``new``), and the PIL format."""
    path = Path(os.path.normpath(path))
    image_format = FIGURE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise MimzooError(f"cannot write {path}: give it a .png or .jpg extension")
    writable_folder(path.parent)
    return replaceable(path, _marked), image_format


def _marked(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return SOFTWARE in (image.info.get("Software"), image.info.get("comment", b"").decode("latin-1"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def save(image: Image.Image, path: Path) -> Path:
    """Write ``image`` to ``path`` (the format from its extension) atomically, marked as mimzoo's, creating the
    folder; refuses what :func:`figure_path` refuses; a one-line error if it cannot."""
    path, image_format = figure_path(path)
    marks = {"PNG": {"pnginfo": _png_mark()}, "JPEG": {"comment": SOFTWARE}}[image_format]
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format=image_format, **marks)
    except OSError as exc:
        raise MimzooError(f"cannot write {path}: {one_line(exc)}") from None
    return path


def _png_mark() -> PngInfo:
    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    return info
