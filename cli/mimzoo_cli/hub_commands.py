"""``mimzoo export | push | pull | list``: publishing and fetching backbones (the work is in ``mimzoo.hub``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mimzoo_cli.choices import ImportFormat
from mimzoo_cli.console import console, err_console, fail_cleanly

BackendDir = Annotated[Path | None, typer.Option(
    envvar="MIMZOO_BACKEND_DIR",
    help="Use a shared folder (Hugging Face cache layout) instead of the Hub, e.g. on an air-gapped cluster.")]
Token = Annotated[str | None, typer.Option(
    help="Hugging Face token (default: HF_TOKEN or the stored `hf auth login`); prefer HF_TOKEN, as an option "
    "is visible in the process list.")]


@fail_cleanly
def export(
    run: Annotated[Path, typer.Argument(help="Run folder made by mimzoo pretrain.")],
    out: Annotated[Path | None, typer.Option(
        help="Export folder (default RUN/export): new, empty, or a previous export, which is replaced (keeping its "
        "repo id, and its results when the encoder weights are the same).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Pretraining data name for the card and tag, e.g. imagenet-1k (default: from the run's --data).")] = None,
    license: Annotated[str | None, typer.Option(help="Licence id for the card (default cc-by-nc-4.0, as MAE).")] = None,
) -> None:
    """Write a Hub-ready folder from a run's checkpoint: timm encoder, model card, mimzoo.json, full pretrainer."""
    from mimzoo.hub.export import export_run
    from mimzoo_cli.progress import RichReporter

    folder = export_run(run, out, dataset=dataset, license=license, reporter=RichReporter())
    console.print(f"exported {run} to {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())),
                  markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def import_checkpoint(
    source: Annotated[Path, typer.Argument(
        help="An official MAE checkpoint (.pth: models_mae.MaskedAutoencoderViT, e.g. mae_visualize_vit_large.pth) or "
        "a transformers ViTMAEForPreTraining folder (config.json + model.safetensors, e.g. facebook/vit-mae-base).")],
    out: Annotated[Path, typer.Option(help="The export folder to write (new or empty, or an earlier export).")],
    format: Annotated[ImportFormat, typer.Option(help="auto: transformers for a folder or .safetensors, else mae.")]
    = ImportFormat.auto,
    arch: Annotated[str | None, typer.Option(help="mimzoo arch (default: read from the tensor shapes).")] = None,
    encoder_only: Annotated[bool, typer.Option(
        "--encoder-only", help="Import only the encoder, even where the checkpoint has a decoder.")] = False,
    norm_pix_loss: Annotated[bool | None, typer.Option(
        "--norm-pix-loss/--no-norm-pix-loss", help="The target the source trained with, where the file does not "
        "say (official .pth without args; default: norm-pix, MAE's recipe; mae_visualize_*: --no-norm-pix-loss).",
        show_default=False)] = None,
    dataset: Annotated[str, typer.Option(help="Pretraining data name for the card and tag.")] = "imagenet-1k",
    license: Annotated[str | None, typer.Option(help="Licence id for the card (default cc-by-nc-4.0, as MAE).")] = None,
) -> None:
    """Turn an existing MAE checkpoint into a mimzoo export: plain-timm encoder, model card, pretrainer."""
    from mimzoo.hub.importers import import_checkpoint as run_import
    from mimzoo_cli.progress import RichReporter

    folder, imported = run_import(source, out, format.value, arch, encoder_only, norm_pix_loss, dataset, license,
                                  RichReporter())
    console.print(f"imported {source} ({imported.source['format']}, {imported.model.arch.name}) to {folder}: "
                  + ", ".join(sorted(p.name for p in folder.iterdir())), markup=False, highlight=False, soft_wrap=True)
    for note in imported.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def push(
    folder: Annotated[Path, typer.Argument(help="Export folder (mimzoo export).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help=(
        "Hub repo, ORG/NAME\\[@REVISION] as in pull and hf-hub: (the branch is created if missing; default main)."))],
    private: Annotated[bool | None, typer.Option("--private/--public", help=(
        "Make the repo private or public, a new or an existing one (default: a new repo gets its owner's default "
        "visibility, e.g. an organisation's private-by-default; an existing one keeps its own)."),
        show_default=False)] = None,
    token: Token = None,
    backend_dir: BackendDir = None,
) -> None:
    """Publish an export folder to the Hugging Face Hub (or to --backend-dir)."""
    from mimzoo.hub.backends import HfHubBackend, LocalDirBackend
    from mimzoo.hub.backends import push as push_folder

    backend = LocalDirBackend(backend_dir) if backend_dir else HfHubBackend(token)
    where = push_folder(folder, repo_id, backend, private=private)
    console.print(f"pushed {folder} to {where}", markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def pull(
    name: Annotated[str, typer.Argument(help="ORG/NAME\\[@REVISION] or a zoo name (mimzoo list).")],
    token: Token = None,
    backend_dir: BackendDir = None,
) -> None:
    """Download a backbone into the Hugging Face cache (HF_HUB_CACHE / HF_HOME); print its snapshot folder."""
    from mimzoo.hub.backends import HfHubBackend, LocalDirBackend
    from mimzoo.hub.backends import pull as pull_repo

    info = pull_repo(name, LocalDirBackend(backend_dir) if backend_dir else HfHubBackend(token))
    console.print(str(info.weights.parent), markup=False, highlight=False, soft_wrap=True)  # for $(mimzoo pull ...)
    err_console.print(f"cached: use it offline (HF_HUB_OFFLINE=1) as the backbone {info.spec} of any mimzoo command, "
                  f'or in plain timm as timm.create_model("{info.spec}", pretrained=True)',
                  markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def list_zoo() -> None:
    """The zoo's backbones: what each is, what it measured, and which are in the local Hugging Face cache."""
    from mimzoo.hub.backends import zoo_status
    from mimzoo.wording import counted
    from mimzoo.zoo import measured

    def say(line: str, markup: bool = False) -> None:
        console.print(line, markup=markup, highlight=False)

    # a block of short lines per entry: readable at 80 columns, names and repos whole
    say("mimzoo zoo: a NAME is the backbone of any command;\n`mimzoo pull NAME` downloads it once.\n")
    for entry, snapshot in zoo_status():
        say(f"[bold]{entry.name}[/bold]  ({'cached' if snapshot else 'not cached'})", markup=True)
        say(f"  hf-hub:{entry.repo_id}")
        say(f"  {entry.description}; {counted(entry.epochs, 'epoch')}")
        say(f"  {_measured(entry, measured)}\n")


def _measured(entry, measured) -> str:
    from mimzoo.wording import counted

    if entry.recipe is None:
        return "the authors' release"
    numbers = measured(entry.name)
    if numbers is None:
        return "not built yet (mimzoo zoo build)"
    shown = ", ".join(f"{task} {numbers[task]:.1f}" for task in entry.evals if task in numbers)
    seeds = counted(len(numbers["seeds"]), "seed")
    return f"{shown} ({seeds}, {numbers['minutes']:.0f} min on {', '.join(numbers['device'])})"


COMMANDS = {"export": export, "import": import_checkpoint, "push": push, "pull": pull, "list": list_zoo}
