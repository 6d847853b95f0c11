"""``mimzoo zoo build | report``: reproduce the zoo's entries, or tabulate built ones (the work is in
``mimzoo.engine.zoo_build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mimzoo_cli.choices import DataDevice
from mimzoo_cli.console import console, fail_cleanly
from mimzoo_cli.help import Command, Group, Workers, workers_or_default

Root = Annotated[Path, typer.Option(help="Folder of the build: runs, evaluations, stages/, results.")]
CardsDir = Annotated[Path | None, typer.Option(help="Copy each entry's model card here (the repo's model_cards/).")]
ResultsFile = Annotated[Path | None, typer.Option(
    help="Add the headline numbers here (the package's mimzoo/zoo_results.json, which mimzoo list shows).")]

zoo_app = typer.Typer(help="Reproduce mimzoo's zoo: pretrain, export, evaluate and card its entries.",
                      no_args_is_help=True, cls=Group)


@zoo_app.command(cls=Command)
@fail_cleanly
def build(
    entries: Annotated[list[str] | None, typer.Argument(
        help="Entries to build (default: every entry mimzoo builds; see mimzoo list).", show_default=False)] = None,
    root: Root = Path("zoo"),
    data_dir: Annotated[Path, typer.Option(
        help="Folder with the data packs (cifar10_jpeg_q75.npz, camvid_360x480_jpeg95.npz).")] = Path("data"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_device: Annotated[DataDevice, typer.Option(
        help="Pretraining's views: cpu (PIL in the workers) or gpu (decoded and resampled on the device; a pack "
        "that fits, as CIFAR-10 does, stays there decoded). Recorded in each run's config.")] = DataDevice.cpu,
    workers: Workers = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="Every recipe shrunk to a few steps: checks the chain, "
                                                        "measures nothing.")] = False,
    seed: Annotated[int | None, typer.Option(
        help="Build only this one of each entry's seeds (e.g. one per machine; copying the ROOT folders together "
        "merges the builds).", show_default="all")] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines",
                                            help="Also train the downstream recipes from random init.")] = True,
    cards_dir: CardsDir = None,
    results_file: ResultsFile = None,
) -> None:
    """Build zoo entries; call it again after any stop: done stages are skipped, stopped ones resume.

    Each number lands in ROOT/results.json and results.md with the metrics file that holds it.
    """
    from mimzoo.engine.zoo_build import BuildOptions, ZooBuild, results_markdown
    from mimzoo_cli.progress import RichReporter

    options = BuildOptions(root=root, data_dir=data_dir, device=device, data_device=data_device.value,
                           workers=workers_or_default(workers),
                           smoke=smoke, seed=seed, baselines=baselines, cards_dir=cards_dir, results_file=results_file)
    table = ZooBuild(options, RichReporter()).run(entries or [])
    console.print(results_markdown(table), markup=False, highlight=False, soft_wrap=True)


@zoo_app.command(cls=Command)
@fail_cleanly
def report(root: Root = Path("zoo"), cards_dir: CardsDir = None, results_file: ResultsFile = None) -> None:
    """Write ROOT's results.json, results.md, cards and headline numbers from its stages, training nothing.

    For builds merged from several machines (their ROOT folders copied together): every entry with a seed done.
    """
    from mimzoo.engine.zoo_build import BuildOptions, results_markdown
    from mimzoo.engine.zoo_build import report as write_report

    table = write_report(BuildOptions(root=root, cards_dir=cards_dir, results_file=results_file))
    console.print(results_markdown(table), markup=False, highlight=False, soft_wrap=True)
