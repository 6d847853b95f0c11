"""``mimzoo export | push | pull | list``: publishing and fetching backbones (the work is in ``mimzoo.hub``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from mimzoo_cli.console import console, fail_cleanly

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
def push(
    folder: Annotated[Path, typer.Argument(help="Export folder (mimzoo export).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (created if missing; default main).")] = None,
    token: Token = None,
    backend_dir: BackendDir = None,
) -> None:
    """Publish an export folder to the Hugging Face Hub (or to --backend-dir)."""
    from mimzoo.hub.backends import HfHubBackend, LocalDirBackend
    from mimzoo.hub.backends import push as push_folder

    backend = LocalDirBackend(backend_dir) if backend_dir else HfHubBackend(token)
    where = push_folder(folder, repo_id, backend, revision=revision, private=private)
    console.print(f"pushed {folder} to {where}", markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def pull(
    name: Annotated[str, typer.Argument(help="ORG/NAME[@REVISION] or a zoo name (mimzoo list).")],
    token: Token = None,
    backend_dir: BackendDir = None,
) -> None:
    """Download a backbone into the Hugging Face cache (HF_HUB_CACHE / HF_HOME); print its snapshot folder."""
    from mimzoo.hub.backends import HfHubBackend, LocalDirBackend
    from mimzoo.hub.backends import pull as pull_repo

    info = pull_repo(name, LocalDirBackend(backend_dir) if backend_dir else HfHubBackend(token))
    Console(soft_wrap=True).print(str(info.weights.parent), markup=False, highlight=False)
    console.print(f"cached: use it offline (HF_HUB_OFFLINE=1) as the backbone {info.spec} of any mimzoo command, "
                  f'or in plain timm as timm.create_model("hf-hub:{info.repo_id}", pretrained=True)',
                  markup=False, highlight=False, soft_wrap=True)


@fail_cleanly
def list_zoo() -> None:
    """The zoo's backbones, what each is, and which are in the local Hugging Face cache."""
    from mimzoo.hub.backends import zoo_status

    table = Table(title="mimzoo zoo (use a name as the backbone of any command)", box=box.SIMPLE_HEAD)
    for column in ("name", "cached", "hub repo", "recipe", "what it is"):
        # a name or repo id broken over lines could not be copied; the other columns may wrap
        table.add_column(column, no_wrap=column in ("name", "cached", "hub repo"), overflow="fold")
    for entry, snapshot in zoo_status():
        recipe = f"{entry.method}, {entry.arch}, {entry.data}, {entry.epochs} epochs"
        table.add_row(entry.name, "yes" if snapshot else "no", entry.repo_id, recipe, entry.description)
    Console().print(table)


COMMANDS = {"export": export, "push": push, "pull": pull, "list": list_zoo}
