"""The ``mimzoo`` command line: argument parsing, rich progress and tables; the work is in the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mimzoo.engine.config import DEMO, PretrainConfig
from mimzoo.engine.defaults import MAX_WARMUP_FRACTION, RECIPE_WARMUP_EPOCHS
from mimzoo_cli.choices import Choice, Crop, DataDevice, Degradation, Method, Target
from mimzoo_cli.console import fail_cleanly
from mimzoo_cli.help import Command, Group, Workers

app = typer.Typer(
    name="mimzoo",
    help="Masked image modeling for Vision Transformers: pretrain, export and use timm backbones.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    cls=Group,
)


def _print_version(value: bool) -> None:
    if value:
        from mimzoo import __version__

        typer.echo(f"mimzoo {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """mimzoo: MAE, PixMIM, MFF, LocalMIM and Beyond Masking pretraining for timm ViTs."""


# the recipe defaults of the options; a run applies only the options given on the command line, so --demo or a
# resumed run's config take the place of the others
RECIPE = {name: f.default for name, f in PretrainConfig.__dataclass_fields__.items()}
RECIPE_METHOD = Method(RECIPE["method"])
RECIPE_DATA_DEVICE = DataDevice(RECIPE["data_device"])


DEMO_HELP = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in DEMO.items())


@app.command(cls=Command)
@fail_cleanly
def pretrain(
    ctx: typer.Context,
    method: Annotated[Method, typer.Option(help="Pretraining method.")] = RECIPE_METHOD,
    arch: Annotated[str, typer.Option(help="ViT, e.g. vit_base_patch16_224 or vit_tiny_patch4_32.")]
    = RECIPE["arch"],
    data: Annotated[str | None, typer.Option(
        help="Image folder, PACK.npz[:split], or builtin (the 2,000-image CIFAR-10 sample); needed for a new run, "
        "except with --demo.", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(
        help="A trial on N images of --data (the same seeded subset every time); recorded in config.json.",
        show_default="all")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help=f"The demo, a few CPU minutes: {DEMO_HELP}; other options change it.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs (MAE recipe: 400-1600).")] = RECIPE["epochs"],
    batch_size: Annotated[int, typer.Option(help="Images per process per micro-batch.")] = RECIPE["batch_size"],
    accum: Annotated[int, typer.Option(help="Micro-batches accumulated per optimizer step.")] = RECIPE["accum"],
    blr: Annotated[float | None, typer.Option(
        help="Base lr; lr = blr x effective batch / 256 (default: the method's reference, 1.5e-4; localmim "
        "2e-4).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(
        help=f"Linear warm-up epochs before the cosine (default: the recipe's {RECIPE_WARMUP_EPOCHS}; localmim 10 for "
        f"runs of at most 100 epochs, as its reference; at most "
        f"{MAX_WARMUP_FRACTION:g} x --epochs).")] = None,
    min_lr: Annotated[float | None, typer.Option(
        help="Learning rate at the end of the cosine (default: the method's reference, 0; localmim 1e-6, "
        "misalign 1e-5).")] = None,
    mask_ratio: Annotated[float | None, typer.Option(
        help="Fraction of patches masked (default 0.75; misalign: the reference's for the degradation).")] = None,
    norm_pix_loss: Annotated[bool, typer.Option("--norm-pix-loss/--no-norm-pix-loss",
                                                help="Per-patch normalised target.")] = RECIPE["norm_pix_loss"],
    crop: Annotated[Crop | None, typer.Option(help="View: rrc (MAE) or src (PixMIM); default: the method's.")]
    = None,
    target: Annotated[Target | None, typer.Option(
        help="Target: pixel or lowpass; hog for localmim; default: the method's (localmim: hog).")] = None,
    lowpass_radius: Annotated[float | None, typer.Option(help="Low-pass radius in px (40 at 224 px, scaled).")] = None,
    localmim_scales: Annotated[str | None, typer.Option(
        help="localmim: output scales, e.g. 4,2,1,0.5 (default: those that fit the arch and target); n scales, "
        "fine to coarse, read the last n of blocks 1, 3, depth-3, depth-1.")] = None,
    hog_bins: Annotated[int | None, typer.Option(
        help="localmim --target hog: orientation bins (default 9; the paper's ViT-L recipe: 18).")] = None,
    hog_bias: Annotated[bool, typer.Option(
        "--hog-bias", help="localmim --target hog: a frozen random bias on the Sobel filters, as the reference's "
        "--hog_bias (its ViT-L recipe).")] = RECIPE["hog_bias"],
    fusion: Annotated[bool | None, typer.Option(
        "--fusion/--no-fusion", help="MFF's fusion of several encoder levels feeding the decoder, for mae, pixmim, "
        "mff (default on) and misalign.", show_default=False)] = None,
    mff_layers: Annotated[str | None, typer.Option(
        help="--fusion's 0-based blocks, ending with the last (implies --fusion); default 0,2,4,6,8,11 for 12 "
        "blocks.")] = None,
    mask_unit: Annotated[int, typer.Option(
        help="Mask K x K blocks of patches (LSMAE's mask unit; the ratio is over blocks); K divides the patch "
        "grid.")] = RECIPE["mask_unit"],
    degradation: Annotated[Degradation | None, typer.Option(
        help="Degrade the encoder's input, reconstruct the clean image: distort, blur or decolor (every method); "
        "zoom-in (misalign's default) or zoom-out (misalign only).")] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = RECIPE["weight_decay"],
    clip_grad: Annotated[float | None, typer.Option(help="Clip the gradient norm to this value (default: off).")]
    = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder (config, metrics, checkpoint, export); default runs/METHOD, with --demo "
        f"{DEMO['out']}.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out (or the default run folder) from its checkpoint, with its own "
        "config: give only the options to change.")] = False,
    init_from: Annotated[str | None, typer.Option(
        help="Start from these weights (continued pretraining): hf-hub:ORG/NAME (local cache), an export folder or a "
        ".safetensors file; the whole pretrainer when it is a mimzoo export of the same method and shapes, else the "
        "encoder. Ignored by --resume.")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")]
    = RECIPE["compile"],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = RECIPE["device"],
    seed: Annotated[int, typer.Option(help="Random seed.")] = RECIPE["seed"],
    workers: Workers = None,
    data_device: Annotated[DataDevice, typer.Option(
        help="Where views are decoded and cropped: cpu (PIL in the workers) or gpu (JPEGs decoded and views "
        "resampled in batches on the training device; an npz pack that fits stays there decoded).")]
    = RECIPE_DATA_DEVICE,
    log_every: Annotated[int, typer.Option(
        help="Optimizer steps between metrics lines (and, off a terminal, printed lines).")] = RECIPE["log_every"],
    ckpt_every: Annotated[int, typer.Option(
        help="Optimizer steps between checkpoints; one is also written at the end and when Ctrl-C or SIGTERM "
             "stops the run.")] = RECIPE["ckpt_every"],
) -> None:
    """Pretrain a ViT with a MIM method on --data; [bold]mimzoo pretrain --demo[/bold] is MAE on the built-in CIFAR-10
    sample with a tiny ViT (a few CPU minutes).

    Multi-GPU / multi-node: [bold]torchrun --nproc-per-node=8 -m mimzoo pretrain ...[/bold]
    """
    from mimzoo.engine.pretrain import pretrain as run_pretrain
    from mimzoo.errors import MimzooError
    from mimzoo.fusion import parse_layers
    from mimzoo.methods.localmim import parse_scales
    from mimzoo_cli.progress import RichReporter

    # only what the command line gave: the demo preset or a resumed run's config fill the rest
    given = {k: str(v) if isinstance(v, Choice | Path) else v for k, v in locals().items()
             if k in PretrainConfig.__dataclass_fields__ and ctx.get_parameter_source(k).name != "DEFAULT"}
    if "mff_layers" in given:
        given["mff_layers"] = parse_layers(given["mff_layers"])
    if "localmim_scales" in given:
        given["localmim_scales"] = parse_scales(given["localmim_scales"])
    if data is None and not (demo or resume):
        raise MimzooError("--data is needed for a new run: an image folder, PACK.npz[:split] or builtin (the "
                          "built-in CIFAR-10 sample); or try the demo: mimzoo pretrain --demo")
    cfg = PretrainConfig(**{**(DEMO if demo else {}), **given})
    run_pretrain(cfg, resume=resume, explicit=set(given), reporter=RichReporter())


def _register_commands() -> None:
    from mimzoo_cli import downstream_commands as downstream

    for command in (downstream.knn, downstream.linprobe, downstream.finetune, downstream.segment):
        app.command(cls=Command)(command)
    from mimzoo_cli import hub_commands, viz_commands

    for name, command in {**hub_commands.COMMANDS, **viz_commands.COMMANDS}.items():
        app.command(name=name, cls=Command)(command)
    from mimzoo_cli.zoo_commands import zoo_app

    app.add_typer(zoo_app, name="zoo")


_register_commands()
