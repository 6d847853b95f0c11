"""Training curves of a run folder: every numeric series of ``metrics.jsonl`` against the step, in one PNG.

Panels: the loss with any other ``loss*`` scalar (misalign's ``loss_centre`` and ``loss_ring``), then each other
scalar (``lr``, ``grad_norm``) and each logged list, one line per element (MFF's ``fusion_weights``, shallow to
deep; LocalMIM's ``scale_losses``, fine to coarse), in the order the log first names them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mimzoo.engine.metrics_log import METRICS, read_metrics
from mimzoo.engine.pretrain import RUN_CONFIG
from mimzoo.errors import MimzooError
from mimzoo.viz.draw import INK, Series, figure_path, font, line_height, line_plot, save

NOT_PLOTTED = ("step", "epoch", "img_per_s", "skipped_images")  # axes or bookkeeping, not training signals
# a logged list -> the config option that names its elements, and how: MFF's fused blocks, LocalMIM's scales
ELEMENT_NAMES = {"fusion_weights": ("mff_layers", "block {:g}"), "scale_losses": ("localmim_scales", "x{:g}")}
PANEL_WIDTH, PANEL_HEIGHT, COLUMNS = 520, 300, 2


def element_names(config: dict[str, Any]) -> dict[str, list[str]]:
    """A logged list's element names from the run's config (``ELEMENT_NAMES``), where the config holds them."""
    return {key: [label.format(v) for v in config[option]] for key, (option, label) in ELEMENT_NAMES.items()
            if isinstance(config.get(option), list)}


def curve_panels(records: list[dict[str, Any]], names: dict[str, list[str]] | None = None) -> dict[str, Series]:
    """Panel title -> its series (name -> (steps, values)); non-finite and non-numeric values are left out. A
    logged list's elements take their ``names`` (e.g. from :func:`element_names`), else ``[i]``."""
    names = names or {}
    panels: dict[str, Series] = {}
    for record in records:
        step = record.get("step")
        for key, value in record.items():
            if step is None or key in NOT_PLOTTED:
                continue
            panel = panels.setdefault("loss" if key.startswith("loss") else key, {})
            if isinstance(value, list):
                labels = names.get(key, [])
                labels = labels if len(labels) == len(value) else [f"[{i}]" for i in range(len(value))]
                named = dict(zip(labels, value, strict=True))
            else:
                named = {key: value}
            for name, v in named.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    steps, values = panel.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(v)
    return {title: series for title, series in panels.items() if series}


def plot_run(run_dir: Path, out: Path) -> list[str]:
    """Draw the curves of ``run_dir`` into ``out``; returns the panel titles."""
    figure_path(out)
    if not (Path(run_dir) / METRICS).is_file():
        raise MimzooError(f"{run_dir} has no {METRICS}: pass a run folder made by mimzoo pretrain")
    panels = curve_panels(read_metrics(run_dir), element_names(_run_config(Path(run_dir))))
    if not panels:
        raise MimzooError(f"{Path(run_dir) / METRICS} has no metrics yet; a run logs every --log-every steps")
    columns = min(COLUMNS, len(panels))
    title_height = line_height() + 12
    rows = math.ceil(len(panels) / columns)
    canvas = Image.new("RGB", (columns * PANEL_WIDTH, title_height + rows * PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), f"{run_dir}: {METRICS}", fill=INK, font=font())
    for i, (title, series) in enumerate(panels.items()):
        row, col = divmod(i, columns)
        left, top = col * PANEL_WIDTH, title_height + row * PANEL_HEIGHT
        line_plot(draw, (left, top, left + PANEL_WIDTH, top + PANEL_HEIGHT), title, series)
    save(canvas, out)
    return list(panels)


def _run_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / RUN_CONFIG).read_text())
    except (OSError, ValueError):  # curves still draw, with [i] element names
        return {}
    return config if isinstance(config, dict) else {}
