"""Reconstruction figures: load a pretraining model, cut images to its data view, draw what it reconstructs.

One row per image: original, masked input, reconstruction, reconstruction with the visible patches pasted back,
then the method's own panels (``Pretrainer.reconstruct`` decides them), so nothing here knows one method from
another.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from mimzoo.archs import get_arch
from mimzoo.data.images import UnreadableImage, read_rgb
from mimzoo.data.loader import normalize
from mimzoo.data.sources import IMAGE_EXTENSIONS
from mimzoo.data.transforms import to_uint8_tensor
from mimzoo.engine.checkpoint import CHECKPOINT
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.distributed import resolve_device
from mimzoo.engine.report import Reporter
from mimzoo.errors import MimzooError, check_settings, valid_seed
from mimzoo.hub.export import load_pretrainer, load_run
from mimzoo.hub.layout import PRETRAINER, in_hub_cache, read_record
from mimzoo.hub.resolve import HF_PREFIX, LOCAL_PREFIX, locate_backbone
from mimzoo.methods import Pretrainer, Reconstruction, check_masking, parts, view_size
from mimzoo.viz.draw import INK, NOTE_INK, figure_path, font, line_height, save, wrap
from mimzoo.wording import counted, none_readable
from mimzoo.zoo import ZOO

DEMO_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "demo_photos"
MAX_IMAGES = 32
MIN_CELL, PAD, LABEL_LINES = 128, 8, 2
FIGURE = "reconstructions.png"


def load_method(source: Path | str) -> tuple[Pretrainer, PretrainConfig]:
    """A run folder (``checkpoint.pt`` + ``config.json``) or an export with ``pretrainer.safetensors`` (a folder, or
    a backbone spec naming one: ``hf-hub:ORG/NAME[@REV]`` in the local cache, ``local-dir:PATH``, a zoo name) ->
    the whole pretraining model (decoder included) on the CPU in eval mode, and its config."""
    spec = str(source)
    folder = locate_backbone(spec).weights.parent if spec.startswith((HF_PREFIX, LOCAL_PREFIX)) or spec in ZOO \
        else Path(source)
    if (folder / CHECKPOINT).is_file():
        model, cfg, _ = load_run(folder)
    elif (folder / PRETRAINER).is_file():
        cfg = PretrainConfig.from_dict(read_record(folder)["config"])
        model = load_pretrainer(folder)
    else:
        raise MimzooError(f"{folder} has no {CHECKPOINT} (a run folder) nor {PRETRAINER} (a mimzoo export): "
                          "reconstructions need the decoder, not only the timm encoder; pass the run folder, or an "
                          "export made from it with `mimzoo export RUN`")
    return model.eval(), cfg


def image_files(paths: Sequence[Path] | None = None) -> list[Path]:
    """The image files of ``paths`` (a folder gives its images, sorted by name), or the demo photos shipped with
    mimzoo (``mimzoo/data/demo_photos``, sources and licences in its README)."""
    files: list[Path] = []
    for path in map(Path, paths or [DEMO_PHOTOS]):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            raise MimzooError(f"image path {path} does not exist")
    if not files:
        raise MimzooError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, paths or []))}")
    if len(files) > MAX_IMAGES:
        raise MimzooError(f"{len(files)} images make {len(files)} rows; pick at most {MAX_IMAGES}")
    return files


def load_views(files: Sequence[Path], size: int, reporter: Reporter | None = None) -> torch.Tensor:
    """Image files -> (B, 3, size, size), ImageNet-normalised: each resized (bicubic) so its short side is ``size``,
    then centre-cropped. Unreadable files are left out with a warning naming them; none readable is an error."""
    views, skipped = [], []
    for file in files:
        try:
            views.append(to_uint8_tensor(ImageOps.fit(read_rgb(file), (size, size), Image.BICUBIC)))
        except UnreadableImage as exc:
            skipped.append(f"{file} ({exc})")
    if not views:
        raise MimzooError(f"{none_readable(len(files), skipped[0])}; pass image files PIL can open with --images")
    if skipped:
        (reporter or Reporter()).message(
            f"warning: skipped {counted(len(skipped), 'unreadable image')}: {', '.join(skipped)}")
    return normalize(torch.stack(views), torch.device("cpu"))


def reconstruct(model: Pretrainer, views: torch.Tensor, seed: int = 0,
                mask_ratio: float | None = None) -> Reconstruction:
    """``model.reconstruct(views)`` with its mask (and any random degradation) drawn after ``torch.manual_seed(seed)``:
    the same seed gives the same mask. ``mask_ratio`` replaces the model's (it stays set on the model). The caller's
    RNG state is restored afterwards."""
    if mask_ratio is not None:
        if not 0 <= mask_ratio < 1:
            raise MimzooError(f"--mask-ratio must be in [0, 1), not {mask_ratio}")
        model.mask_ratio = mask_ratio
    with torch.random.fork_rng(devices=[views.device] if views.is_cuda else []):
        torch.manual_seed(seed)
        return model.eval().reconstruct(views)


def to_picture(rgb: torch.Tensor, size: int) -> Image.Image:
    """(3, h, w) RGB in [0, 1] -> a size x size PIL image; enlarged with nearest, so each pixel (or HOG cell) of a
    small model's input stays a crisp square."""
    array = (rgb.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    return picture.resize((size, size), Image.NEAREST if picture.width <= size else Image.BICUBIC)


def grid_columns(shown: Reconstruction) -> dict[str, torch.Tensor]:
    """The figure's columns in order: the standard panels the method has, then its own."""
    standard = {"original": shown.original, "masked input": shown.masked, "reconstruction": shown.reconstruction,
                "reconstruction + visible patches": shown.pasted}
    return {**{name: pictures for name, pictures in standard.items() if pictures is not None}, **shown.panels}


def grid_cell(shown: Reconstruction) -> int:
    """Side of a panel in px: the image size, at least ``MIN_CELL`` (a 32-px input is shown 4x)."""
    return max(MIN_CELL, shown.original.shape[-1])


def reconstruction_grid(shown: Reconstruction, title: str) -> Image.Image:
    """The figure: ``title`` and the notes on top, a label over each column, one row per image."""
    columns, cell, lh = grid_columns(shown), grid_cell(shown), line_height()
    width = len(columns) * (cell + PAD) + PAD
    header = [(line, INK) for line in wrap(title, width - 2 * PAD)]
    header += [(line, NOTE_INK) for note in shown.notes for line in wrap(f"note: {note}", width - 2 * PAD)]
    top = PAD + len(header) * lh + PAD  # the column labels start here
    rows = shown.original.shape[0]
    canvas = Image.new("RGB", (width, top + LABEL_LINES * lh + rows * (cell + PAD)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (line, ink) in enumerate(header):
        draw.text((PAD, PAD + i * lh), line, fill=ink, font=font())
    for col, (name, pictures) in enumerate(columns.items()):
        x = PAD + col * (cell + PAD)
        for i, line in enumerate(wrap(name, cell)[:LABEL_LINES]):
            draw.text((x, top + i * lh), line, fill=INK, font=font())
        for row in range(rows):
            canvas.paste(to_picture(pictures[row], cell), (x, top + LABEL_LINES * lh + row * (cell + PAD)))
    return canvas


def default_figure(source: Path | str) -> Path:
    """Where the figure of ``source`` goes by default: into a run folder, as ``mimzoo plot`` writes its curves; beside
    an export folder (which holds only the export's files); for a backbone spec (``hf-hub:ORG/NAME``, a zoo name)
    or a snapshot folder in the Hugging Face cache (never written), into the current folder, named after it."""
    folder = Path(source)
    if (folder / CHECKPOINT).is_file():
        return folder / FIGURE
    if in_hub_cache(folder):
        return Path(f"{folder.resolve().parent.parent.name}-{FIGURE}")
    if folder.is_dir():
        folder = folder if folder.name not in ("", "..") else folder.resolve()  # `.` inside the export: beside it
        return folder.parent / f"{folder.name}-{FIGURE}"
    return Path(f"{re.sub(r'[^A-Za-z0-9._-]+', '-', str(source)).strip('-.')}-{FIGURE}")


def visualize(checkpoint: Path, out: Path | None = None, images: Sequence[Path] | None = None,
              mask_ratio: float | None = None, seed: int = 0, reporter: Reporter | None = None,
              device: str = "cpu") -> tuple[Reconstruction, Path]:
    """Write the reconstruction figure of ``checkpoint`` (a run or export folder, see :func:`load_method`) on
    ``images`` (default: the demo photos) to ``out`` (default: :func:`default_figure`), computed on ``device``
    (auto, cpu, cuda, cuda:N); returns what it drew and where. ``reporter`` hears of skipped images."""
    check_settings([valid_seed(seed)])
    out, _ = figure_path(out if out is not None else default_figure(checkpoint))
    model, cfg = load_method(checkpoint)
    if mask_ratio is not None:
        check_masking(dataclasses.replace(cfg, mask_ratio=mask_ratio))
    target = resolve_device(device)
    size = view_size(get_arch(cfg.arch), cfg)  # zoom-in takes a larger view, zoom-out a smaller one
    views = load_views(image_files(images), size, reporter).to(target)
    shown = reconstruct(model.to(target), views, seed, mask_ratio)
    recipe = [f"{cfg.method} ({' + '.join(parts(cfg))})", cfg.arch, f"mask ratio {model.mask_ratio:g}", f"seed {seed}"]
    save(reconstruction_grid(shown, f"{checkpoint}: " + ", ".join(recipe)), out)
    return shown, out
