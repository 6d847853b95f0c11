import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_pretrain_cli import error_line

from conftest import TINY_ARCH
from mimzoo.archs import get_arch
from mimzoo.engine.config import PretrainConfig
from mimzoo.errors import MimzooError
from mimzoo.hub.layout import CONFIG, WEIGHTS
from mimzoo.methods import get_method, resolve_defaults, view_size
from mimzoo.methods.base import MASKED_GREY, pixel_mask, to_rgb
from mimzoo.targets import (
    denorm_pix,
    denorm_pix_per_channel,
    hog_features,
    hog_picture,
    norm_pix,
    norm_pix_per_channel,
    unpatchify,
)
from mimzoo.viz import curve_panels, grid_columns, image_files, load_views, plot_run, reconstruct, reconstruction_grid
from mimzoo.viz.grid import DEMO_PHOTOS, PAD, default_figure, grid_cell
from mimzoo.viz.plots import COLUMNS, PANEL_HEIGHT, PANEL_WIDTH

STANDARD = ["original", "masked input", "reconstruction", "reconstruction + visible patches"]
HOG_SCALES = ["x4", "x2", "x1", "x0.5"]  # vit_tiny_patch8_64: HOG cells of 2, 4, 8 and 16 px


def build(method: str, arch: str = TINY_ARCH, **options):
    """A freshly initialised method (no training) and its data view size, as ``mimzoo visualize`` builds them."""
    cfg = resolve_defaults(PretrainConfig(method=method, arch=arch, **options))
    spec, a = get_method(cfg.method), get_arch(arch)
    torch.manual_seed(0)
    return spec.build(a, cfg), view_size(a, cfg)


@pytest.fixture(scope="module")
def photos() -> list:
    return image_files()[:2]  # astronaut and camera (grey), from the photos shipped in the package


@pytest.mark.parametrize("method,arch,options,columns", [
    ("mae", TINY_ARCH, {}, STANDARD),
    ("pixmim", TINY_ARCH, {}, [*STANDARD, "filtered target"]),
    ("mff", TINY_ARCH, {}, STANDARD),
    ("localmim", TINY_ARCH, {"target": "pixel"},
     [*STANDARD, "x4 (1 px regions)", "x2 (2 px regions)", "x1 (4 px regions)", "x0.5 (8 px regions)"]),
    ("localmim", "vit_tiny_patch8_64", {},
     ["original", "masked input", *[f"{s} HOG {kind}" for s in HOG_SCALES for kind in ("predicted", "target")]]),
    ("misalign", TINY_ARCH, {}, [*STANDARD, "target view", "predicted view"]),
    ("misalign", TINY_ARCH, {"degradation": "blur"}, [*STANDARD, "degraded input"]),
    ("misalign", TINY_ARCH, {"degradation": "zoom-out"}, [*STANDARD, "target view", "predicted view"]),
])
def test_grid_png_has_a_column_per_panel_and_a_row_per_image(tmp_path, photos, method, arch, options, columns):
    model, size = build(method, arch, **options)
    shown = reconstruct(model, load_views(photos, size), seed=0)
    assert list(grid_columns(shown)) == columns
    for pictures in grid_columns(shown).values():
        assert pictures.shape[:2] == (2, 3) and 0 <= pictures.min() and pictures.max() <= 1
    path = tmp_path / "grid.png"
    reconstruction_grid(shown, f"{method} {arch}").save(path)
    cell = grid_cell(shown)
    assert cell == max(128, get_arch(arch).img_size)
    with Image.open(path) as png:
        assert png.width == len(columns) * (cell + PAD) + PAD
        assert 2 * (cell + PAD) < png.height < 2 * (cell + PAD) + 200  # + title, notes and labels


def test_norm_pix_is_said_in_the_figure_and_raw_pixels_are_not_denormalised(photos):
    views = load_views(photos, 32)
    assert "norm-pix" in reconstruct(build("mae")[0], views).notes[0]
    model, _ = build("mae", norm_pix_loss=False)
    shown = reconstruct(model, views, seed=0)
    assert shown.notes == []
    torch.manual_seed(0)  # the same mask, so the same prediction: shown as it is
    assert torch.allclose(shown.reconstruction, to_rgb(unpatchify(model(views).pred, 4)))


def test_same_seed_same_mask_and_the_callers_rng_is_kept(photos):
    model, _ = build("mae")
    views = load_views(photos, 32)
    state = torch.get_rng_state()
    first, again, other = (reconstruct(model, views, seed=s).masked for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.manual_seed(3)  # what reconstruct draws: MAE's mask, the first thing its forward samples
    mask = pixel_mask(model(views).mask, 4)
    assert torch.equal(first * mask, torch.full_like(first, MASKED_GREY) * mask)


def test_mask_ratio_override_and_pasted_visible_patches(photos):
    model, _ = build("mae")
    views = load_views(photos, 32)
    half = reconstruct(model, views, mask_ratio=0.5)
    grey = (half.masked == MASKED_GREY).all(dim=1).float().mean().item()
    assert model.mask_ratio == 0.5 and grey == pytest.approx(0.5, abs=0.02)
    nothing_masked = reconstruct(model, views, mask_ratio=0.0)
    assert torch.equal(nothing_masked.masked, nothing_masked.original)
    assert torch.equal(nothing_masked.pasted, nothing_masked.original)
    with pytest.raises(MimzooError, match=r"--mask-ratio must be in \[0, 1\)"):
        reconstruct(model, views, mask_ratio=1.0)


def test_misalign_shows_the_degraded_input_its_forward_encoded(photos):
    """distort draws a random centre before the mask: the panel is the input forward saw, not a fresh draw."""
    model, _ = build("misalign", degradation="distort")
    views = load_views(photos, 32)
    shown = reconstruct(model, views, seed=5)
    torch.manual_seed(5)
    assert torch.allclose(shown.panels["degraded input"], to_rgb(model.degrade(views).images))
    torch.manual_seed(5)
    visible = 1 - pixel_mask(model(views).mask, 4)  # the mask forward draws after that degradation
    assert torch.allclose(shown.masked * visible, shown.panels["degraded input"] * visible)


def test_zoom_out_shows_the_prediction_on_the_canvas_the_encoder_saw(photos):
    model, size = build("misalign", degradation="zoom-out")  # 23-px view on a 32-px canvas
    views = load_views(photos, size)
    shown = reconstruct(model, views, seed=5)
    torch.manual_seed(5)
    assert torch.allclose(shown.original, to_rgb(model.degrade(views).images))  # the canvas forward encoded
    assert shown.panels["target view"].shape[-1] == shown.reconstruction.shape[-1] == 32


def test_zoom_in_boxes_the_encoder_window_in_the_view(photos):
    model, size = build("misalign")  # 42-px view, 5-px ring around the 32-px window
    shown = reconstruct(model, load_views(photos, size))
    view = shown.panels["target view"]
    assert view.shape[-1] == 42
    red = torch.tensor([1.0, 0.2, 0.2]).view(3, 1)
    assert torch.equal(view[0, :, 5, 5:37], red.expand(3, 32)) and torch.equal(view[0, :, 5:37, 36], red.expand(3, 32))
    assert torch.allclose(shown.original, to_rgb(load_views(photos, size)[..., 5:37, 5:37]))


def test_norm_pix_inverses_recover_the_patches():
    patches = torch.rand(2, 5, 48) * 3 + 1
    assert torch.allclose(denorm_pix(norm_pix(patches), patches), patches, atol=1e-5)
    assert torch.allclose(denorm_pix_per_channel(norm_pix_per_channel(patches), patches), patches, atol=1e-5)


def test_hog_picture_colours_an_edge_by_its_orientation_and_leaves_flat_cells_black():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0  # a vertical edge: one orientation bin in the cells that hold it
    picture = hog_picture(hog_features(image, [4])[0])  # (1, 3, 4, 4)
    flat, edge = picture[0, :, :, 0], picture[0, :, :, 1]
    assert flat.abs().max() == 0
    assert torch.allclose(edge, edge[:, :1].expand(3, 4)) and edge.max() > 0.9  # one colour, at full strength


def test_demo_photos_ship_with_their_licences():
    files = image_files()
    assert len(files) == 9 and all(f.parent == DEMO_PHOTOS and f.suffix == ".jpg" for f in files)
    readme = (DEMO_PHOTOS / "README.md").read_text()
    assert all(f.name in readme for f in files) and "CC BY 2.0" in readme
    assert sum(f.stat().st_size for f in files) < 400_000


def test_plot_draws_a_panel_per_series_group(tmp_path):
    lines = [{"step": s, "epoch": s / 10, "loss": 1 / s, "lr": 1e-3, "grad_norm": 0.5, "img_per_s": 9.0,
              "loss_centre": 0.5 / s, "loss_ring": 2 / s, "fusion_weights": [0.3, 0.7], "scale_losses": [1.0, 2.0, 3.0]}
             for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + '\n{"step": 6, "lo')  # a killed run
    panels = curve_panels([json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()[:5]])
    assert list(panels) == ["loss", "lr", "grad_norm", "fusion_weights", "scale_losses"]
    assert list(panels["loss"]) == ["loss", "loss_centre", "loss_ring"]
    assert panels["fusion_weights"]["[1]"] == ([1, 2, 3, 4, 5], [0.7] * 5)
    assert plot_run(tmp_path, tmp_path / "curves.png") == list(panels)
    with Image.open(tmp_path / "curves.png") as png:
        assert png.width == COLUMNS * PANEL_WIDTH
        assert 3 * PANEL_HEIGHT < png.height < 3 * PANEL_HEIGHT + 40  # 5 panels in 3 rows, and a title


def test_plot_names_list_elements_from_the_run_config_and_ticks_tell_values_apart(tmp_path):
    from mimzoo.viz.draw import nice_ticks, tick_labels

    labels = tick_labels(nice_ticks(0.16660, 0.16672))  # MFF's fusion weights early on: all near 1/6
    assert len(set(labels)) == len(labels) > 2 and labels[0] == "0.1666"
    assert tick_labels(nice_ticks(0, 1000)) == ["0", "200", "400", "600", "800", "1000"]
    lines = [{"step": s, "loss": 1.0 / s, "fusion_weights": [0.2, 0.3, 0.5], "scale_losses": [0.1, 0.2]}
             for s in range(1, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    (tmp_path / "config.json").write_text(json.dumps({"mff_layers": [0, 5, 11], "localmim_scales": [2, 0.5]}))
    from mimzoo.viz.plots import element_names

    panels = curve_panels(lines, element_names(json.loads((tmp_path / "config.json").read_text())))
    assert list(panels["fusion_weights"]) == ["block 0", "block 5", "block 11"]
    assert list(panels["scale_losses"]) == ["x2", "x0.5"]
    assert plot_run(tmp_path, tmp_path / "curves.png") == ["loss", "fusion_weights", "scale_losses"]


def test_visualize_and_plot_from_the_cli(cli, finished_run, tmp_path, photos):
    run = shutil.copytree(finished_run[0], tmp_path / "run")
    images = [arg for photo in photos for arg in ("--images", photo)]
    # by default into the run folder (as plot), beside an export folder (which a push uploads whole)
    for source, out, options in ((run, run / "reconstructions.png", ["--device", "cpu"]),
                                 (run, tmp_path / "b.png", ["--out", tmp_path / "b.png"]),
                                 (run / "export", run / "export-reconstructions.png", [])):
        result = cli("visualize", source, *images, "--seed", "1", *options)
        assert result.exit_code == 0, result.output
        assert f"wrote {out}: 2 images x 4 panels" in result.output and "note: norm-pix" in result.output
    assert "unknown device 'tpu'" in error_line(cli("visualize", run, "--device", "tpu"))
    assert "--mask-ratio 0.999 leaves none of the 64 patches" in error_line(
        cli("visualize", run, "--mask-ratio", "0.999", "--out", tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()
    with (Image.open(run / "reconstructions.png") as a, Image.open(tmp_path / "b.png") as b,
          Image.open(run / "export-reconstructions.png") as c):
        assert a.tobytes() == b.tobytes()  # same seed, same mask
        assert a.size == c.size  # the export holds the same model
    result = cli("plot", run, "--out", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    assert "loss, lr, grad_norm" in result.output and (tmp_path / "curves.png").is_file()


def test_cli_errors_are_one_line(cli, finished_run, tmp_path):
    run, _ = finished_run
    timm_only = tmp_path / "timm_only"  # a plain timm export: the encoder without the decoder
    timm_only.mkdir()
    for name in (CONFIG, WEIGHTS):
        shutil.copy(run / "export" / name, timm_only / name)
    assert "pretrainer.safetensors" in error_line(cli("visualize", timm_only))
    assert "mimzoo export RUN" in error_line(cli("visualize", timm_only))
    assert "does not exist" in error_line(cli("visualize", run, "--images", tmp_path / "missing.jpg"))
    assert "give it a .png or .jpg extension" in error_line(cli("visualize", run, "--out", tmp_path / "grid"))
    assert "no metrics.jsonl" in error_line(cli("plot", tmp_path))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    said = error_line(cli("visualize", run, "--images", broken))
    assert f"the image {broken} (not in an image format PIL can decode) is not readable" in said
    result = cli("visualize", run, "--images", broken, "--images", DEMO_PHOTOS / "coffee.jpg", "--out",
                 tmp_path / "one.png")
    assert result.exit_code == 0 and f"warning: skipped 1 unreadable image: {broken} (" in result.output
    assert "1 image x 4 panels" in result.output


def test_a_pretrainer_file_that_does_not_fit_its_config_is_one_line(cli, finished_run, tmp_path):
    from safetensors.torch import load_file, save_file

    export = shutil.copytree(finished_run[0] / "export", tmp_path / "export")
    weights = load_file(export / "pretrainer.safetensors")
    weights.pop("decoder.mask_token")
    save_file(weights, export / "pretrainer.safetensors")
    line = error_line(cli("visualize", export))
    assert "pretrainer.safetensors does not fit a mae vit_tiny_patch4_32 model" in line and "mask_token" in line


def test_the_figure_of_a_backbone_spec_goes_into_the_current_folder_named_after_it():
    # a spec is not a path: its slashes and colons must not name folders (or climb out of the current one)
    assert default_figure("hf-hub:lab/tiny@v1") == Path("hf-hub-lab-tiny-v1-reconstructions.png")
    assert default_figure("../../etc/passwd") == Path("etc-passwd-reconstructions.png")


def test_the_figure_of_the_current_export_folder_goes_beside_it(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(tmp_path / "exp")
    assert default_figure(".") == tmp_path / "exp-reconstructions.png"  # not `exp/-reconstructions.png`, inside
    assert default_figure("../exp") == Path("../exp-reconstructions.png")
