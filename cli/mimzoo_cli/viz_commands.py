"""``mimzoo visualize | plot``: reconstruction grids and training curves (the work is in ``mimzoo.viz``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mimzoo_cli.console import console, fail_cleanly


@fail_cleanly
def visualize(
    checkpoint: Annotated[Path, typer.Argument(
        help="Run folder (checkpoint.pt + config.json), export folder with pretrainer.safetensors, or such an "
        "export as hf-hub:ORG/NAME\\[@REV] (pulled), local-dir:PATH or a zoo name.")],
    images: Annotated[list[Path] | None, typer.Option(
        metavar="PATH", help="An image file or folder; repeat for more (default: the demo photos shipped with "
        "mimzoo).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="The .png or .jpg to write, new or one mimzoo wrote (default: RUN/reconstructions.png; for an export "
        "folder, EXPORT-reconstructions.png beside it; for a Hub spec or cache snapshot, in the current folder)."
    )] = None,
    mask_ratio: Annotated[float | None, typer.Option(help="Fraction of patches masked (default: the run's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the mask (and any random degradation): same seed, same mask.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Reconstruction grid of a pretrained model, on your images or the demo photos shipped with mimzoo.

    Per image: original, masked input, reconstruction, reconstruction with the visible patches pasted back, then
    the method's own panels (low-pass target, each LocalMIM scale, the degraded input or zoom-in window).
    """
    from mimzoo.viz import grid_columns
    from mimzoo.viz import visualize as draw_reconstructions
    from mimzoo.wording import counted
    from mimzoo_cli.progress import RichReporter

    shown, out = draw_reconstructions(checkpoint, out, images, mask_ratio, seed, RichReporter(), device)
    columns = grid_columns(shown)
    grid = f"{counted(shown.original.shape[0], 'image')} x {counted(len(columns), 'panel')}"
    console.print(f"wrote {out}: {grid} ({', '.join(columns)})",
                  markup=False, highlight=False, soft_wrap=True)
    for note in shown.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def plot(
    run: Annotated[Path, typer.Argument(help="Run folder made by mimzoo pretrain (reads RUN/metrics.jsonl).")],
    out: Annotated[Path | None, typer.Option(
        help="The .png or .jpg to write, new or one mimzoo wrote (default RUN/curves.png).")] = None,
) -> None:
    """Training curves of a run: loss, lr, grad norm and what the method logs (e.g. MFF's fusion weights).

    Every numeric series of RUN/metrics.jsonl against the step: misalign's centre and ring losses join the loss;
    each logged list (MFF's fusion weights, LocalMIM's per-scale losses) gets a panel with a line per element.
    """
    from mimzoo.viz import plot_run

    out = out or run / "curves.png"
    panels = plot_run(run, out)
    console.print(f"wrote {out}: {', '.join(panels)}", markup=False, highlight=False, soft_wrap=True)


COMMANDS = {"visualize": visualize, "plot": plot}
