"""``mimzoo zoo build``: pretrain, export, evaluate and card every mimzoo-built zoo entry, resumably.

Each entry x seed is a chain of stages under ROOT/ENTRY/seedS/: ``pretrain`` (a run folder; its export is the
backbone), then the entry's evaluations (``knn``, ``linprobe`` (MAE's protocol), ``linprobe_adamw`` (the protocol
of the official-code anchor in ../shared/data/README.md), ``finetune`` on CIFAR-10's test split; ``segment`` on
CamVid's). Baselines run every task's recipe on a random-init ViT (``random:ARCH``). ROOT/stages/STAGE.json
records each stage (done or not, its seconds, device and results); a stage that was stopped (a time limit, a kill)
continues from its checkpoint on the next call, and done stages are skipped, so ``mimzoo zoo build`` can be called
again and again until it finishes. One file per stage lets builds made on several machines (an entry or a seed
each, ``--seed``) merge by copying their ROOT folders together; the results then cover every seed done.

Honest numbers: every recipe is fixed before anything is measured. Where an evaluation has candidates (``SWEEPS``),
each is trained on the training split minus a seeded, stratified 10% validation carve and scored there (its last
epoch; the test split is not even opened), once per arch and data, with the encoder of the zoo's MAE entry of them;
the best one is then the recipe of every entry and baseline of that arch and data, trained on the whole training
split and reported once on the test split (last epoch, no selection).
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mimzoo.engine.checkpoint import CHECKPOINT, atomic_path
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.downstream import DownstreamInput, KnnConfig, run_finetune, run_knn, run_linprobe, run_segment
from mimzoo.engine.finetune import FinetuneConfig
from mimzoo.engine.linprobe import LinprobeConfig
from mimzoo.engine.outputs import (
    RESULTS,
    SOFTWARE,
    card_is_ours,
    marked,
    replaceable,
    results_are_ours,
    writable_folder,
)
from mimzoo.engine.pretrain import pretrain
from mimzoo.engine.report import Reporter
from mimzoo.engine.segment import SegmentConfig
from mimzoo.errors import MimzooError
from mimzoo.hub.layout import WEIGHTS, read_json
from mimzoo.zoo import ZOO, ZooEntry

# zoo data name -> file in --data-dir (the packs of ../shared/data, see its README)
DATA_FILES = {"cifar10": "cifar10_jpeg_q75.npz", "camvid": "camvid_360x480_jpeg95.npz"}
VAL_FRACTION = 0.1
STAGES = "stages"  # ROOT/stages/KEY.json: one record per stage

# the downstream recipe of each task, fixed in advance (the MAE protocols, with ViT-T / CIFAR-sized batches)
EVALS: dict[str, Any] = {
    "knn": KnnConfig(k=20, temperature=0.07, pool="token"),
    "linprobe": LinprobeConfig(epochs=90, warmup_epochs=10, batch_size=256, blr=0.1),
    "linprobe_adamw": LinprobeConfig(optimizer="adamw", epochs=100, batch_size=256),
    "finetune": FinetuneConfig(epochs=100, warmup_epochs=5, batch_size=128, blr=1e-3, layer_decay=0.75,
                               drop_path=0.1),
    "segment": SegmentConfig(epochs=50, warmup_epochs=2, batch_size=8, blr=3.2e-3, crop_size=320),
}
# candidates chosen on the validation carve (one value: no choice, the test run goes straight)
# (the anchor names neither the lr nor the weight decay of its AdamW probe, so both are chosen)
SWEEPS: dict[str, dict[str, tuple[Any, ...]]] = {"finetune": {"blr": (5e-4, 1e-3)},
                                                 "linprobe_adamw": {"blr": (1e-3, 4e-3), "weight_decay": (0.0, 0.05)}}
# results.md's first line (hidden where markdown is rendered): the file is mimzoo's to replace
MARKDOWN_MARK = f"<!-- {SOFTWARE} zoo results: every build and report rewrites this file -->"
# the results key of each task's number (always the last epoch's, on the split the results name)
HEADLINE = {"knn": "top1", "linprobe": "top1", "linprobe_adamw": "top1", "finetune": "top1", "segment": "miou"}

# `--smoke`: every recipe shrunk to a few steps, to check the whole chain (tests, a new machine)
SMOKE_PRETRAIN = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "log_every": 1}
SMOKE_EVALS = {"knn": {"batch_size": 64}, "linprobe": {"epochs": 1, "warmup_epochs": 0, "batch_size": 32},
               "linprobe_adamw": {"epochs": 1, "warmup_epochs": 0, "batch_size": 32},
               "finetune": {"epochs": 1, "warmup_epochs": 0, "batch_size": 8},
               "segment": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2, "crop_size": 64, "previews": 1}}


@dataclass
class BuildOptions:
    root: Path = Path("zoo")
    data_dir: Path = Path("data")
    device: str = "auto"
    data_device: str = "cpu"  # pretraining's views: PIL in the workers, or decoded and resampled on the device
    workers: int = 8
    smoke: bool = False
    baselines: bool = True
    seed: int | None = None  # build this one of each entry's seeds (None: all of them)
    cards_dir: Path | None = None  # where each entry's card is copied (the repo's model_cards/)
    results_file: Path | None = None  # where the headline numbers are written (the package's zoo_results.json)
    command: str = field(default_factory=lambda: " ".join(["mimzoo", *sys.argv[1:]]))


class ZooBuild:
    """One build: the stage records, the stages, the results table."""

    def __init__(self, options: BuildOptions, reporter: Reporter | None = None) -> None:
        self.options, self.reporter = options, reporter or Reporter()
        writable_folder(options.root, "--root")
        self.state = read_stages(options.root)
        # a smoke stage is done in a few steps: a real build must never count it as done, nor the reverse
        other = next((key for key, stage in self.state.items() if stage["smoke"] != options.smoke), None)
        if other is not None:
            kind, other_kind = ("smoke", "real") if options.smoke else ("real", "smoke")
            raise MimzooError(f"{options.root} holds stages of a {other_kind} build ({STAGES}/{other}.json), which a "
                              f"{kind} build must not mix with its own; choose another --root")
        self._outputs()  # before hours of training, not after

    # ---- the plan --------------------------------------------------------------------------------------------
    def run(self, names: list[str]) -> dict[str, Any]:
        entries = [_buildable(name) for name in names] or [e for e in ZOO.values() if e.recipe is not None]
        for entry in entries:
            for seed in self._seeds(entry):
                backbone = self.pretrain(entry, seed)
                for task in entry.evals:
                    self.evaluate(f"{entry.name}/seed{seed}/{task}", task, backbone, entry.arch, entry.data, seed)
        if self.options.baselines:
            for arch, data, task in sorted({(e.arch, e.data, t) for e in entries for t in e.evals}):
                self.evaluate(f"baselines/{arch}-{data}/{task}", task, f"random:{arch}", arch, data, 0)
        return self.write_results()

    def _seeds(self, entry: ZooEntry) -> tuple[int, ...]:
        if self.options.seed is None:
            return entry.seeds
        if self.options.seed not in entry.seeds:
            raise MimzooError(f"{entry.name} is built with seeds {', '.join(map(str, entry.seeds))}, not "
                              f"{self.options.seed}; choose one of those with --seed")
        return (self.options.seed,)

    def pretrain(self, entry: ZooEntry, seed: int) -> str:
        key, out = f"{entry.name}/seed{seed}/pretrain", self.options.root / entry.name / f"seed{seed}" / "pretrain"
        if not self._done(key):
            recipe = {**entry.recipe, **(SMOKE_PRETRAIN if self.options.smoke else {})}
            cfg = PretrainConfig(**{**recipe, "data": str(self._data(entry.data)), "out": str(out), "seed": seed,
                                    "device": self.options.device, "data_device": self.options.data_device,
                                    "workers": self.options.workers})
            resume = (out / CHECKPOINT).exists()
            self._stage(key, lambda: {"export": str(pretrain(cfg, resume=resume, explicit=set(recipe),
                                                             reporter=self.reporter))})
        return str(out / "export")

    def evaluate(self, key: str, task: str, backbone: str, arch: str, data: str, seed: int) -> None:
        if self._done(key):
            return
        out = self.options.root / key
        cfg = replace(EVALS[task], **(SMOKE_EVALS[task] if self.options.smoke else {}), workers=self.options.workers)
        chosen = self._recipe(task, cfg, arch, data)
        final = replace(cfg, **chosen, out=str(out / "test"))
        self._stage(key, lambda: {"chosen": chosen, "split": "test",
                                  **self._run_task(task, final, backbone, data, seed, record=True)})

    def _recipe(self, task: str, cfg: Any, arch: str, data: str) -> dict[str, Any]:
        """The sweep's best candidate on the validation carve, chosen once per task, arch and data with the encoder
        of the reference entry (``reference_entry``) and then used by every entry and baseline of that arch and
        data: one downstream recipe for all, as the papers compare methods, at the cost of one sweep. Each
        candidate is its own resumable stage under ``recipes/``."""
        sweep = SWEEPS.get(task, {})
        candidates = [dict(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())]
        if len(candidates) < 2:
            return candidates[0] if candidates else {}
        reference = reference_entry(arch, data)
        backbone = self.pretrain(reference, reference.seeds[0])
        scores = []
        for i, candidate in enumerate(candidates):
            stage = f"recipes/{arch}-{data}/{task}/val{i}"
            run_cfg = replace(cfg, **candidate, out=str(self.options.root / stage))
            if not self._done(stage):
                self._stage(stage, lambda c=run_cfg, chosen=candidate: {
                    "candidate": chosen, "split": "val", "backbone": reference.name,
                    **self._run_task(task, c, backbone, data, reference.seeds[0], record=False,
                                     val_fraction=VAL_FRACTION)})
            scores.append(self.state[stage]["results"][HEADLINE[task]])
        return candidates[max(range(len(candidates)), key=scores.__getitem__)]

    def _run_task(self, task: str, cfg: Any, backbone: str, data: str, seed: int, record: bool,
                  val_fraction: float | None = None) -> dict[str, Any]:
        if not backbone.startswith("random:") and not (Path(backbone) / WEIGHTS).is_file():
            stage = self.options.root / STAGES / f"{Path(backbone).parent.relative_to(self.options.root)}.json"
            raise MimzooError(f"{backbone}/{WEIGHTS} is gone, though {stage} records its pretraining as done (a "
                              "build merged from another machine or lease keeps no weights); restore or carry it, "
                              f"or remove {stage} to pretrain it again")
        if hasattr(cfg, "resume"):
            cfg = replace(cfg, resume=(Path(cfg.out) / CHECKPOINT).exists())
        inp = DownstreamInput(backbone, str(self._data(data)), val_fraction, None, self.options.device, seed,
                              record=record, test=val_fraction is None)
        if task == "segment":
            results = run_segment(inp, cfg, "test" if val_fraction is None else "val", self.reporter)
        else:
            run = {"knn": run_knn, "linprobe": run_linprobe, "linprobe_adamw": run_linprobe, "finetune": run_finetune}
            results = run[task](inp, cfg, self.reporter)
        return {HEADLINE[task]: results[HEADLINE[task]], "split": results["split"],
                # relative to ROOT, where results.json lists it: builds merged from other machines keep their paths
                "metrics_file": (Path(cfg.out) / "results.json").relative_to(self.options.root).as_posix()}

    # ---- stages and state ------------------------------------------------------------------------------------
    def _done(self, key: str) -> bool:
        return self.state.get(key, {}).get("done", False)

    def _stage(self, key: str, work: Callable[[], dict[str, Any]]) -> None:
        """Run one stage; its seconds add up over the calls it takes (an interrupted call's seconds count too)."""
        self.reporter.message(f"zoo: {key}")
        entry = self.state.setdefault(key, {"done": False, "seconds": 0.0})
        start = time.perf_counter()
        try:
            entry["results"] = work()
            entry["done"] = True
        finally:
            entry["seconds"] = round(entry["seconds"] + time.perf_counter() - start, 1)
            entry["device"] = device_name(self.options.device)
            entry["command"] = self.options.command
            entry["smoke"] = self.options.smoke
            path = self.options.root / STAGES / f"{key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(entry, indent=2))

    def _data(self, name: str) -> Path:
        path = self.options.data_dir / DATA_FILES[name]
        if not path.is_file():
            raise MimzooError(f"the zoo's {name} data is not at {path}; pass --data-dir with the folder holding "
                              f"{DATA_FILES[name]} (the packs of ../shared/data, see its README)")
        return path

    # ---- results ---------------------------------------------------------------------------------------------
    def write_results(self) -> dict[str, Any]:
        """ROOT/results.json and results.md (mean and spread over seeds, minutes per entry), the cards and the
        shipped headline numbers, of every entry with a seed done: this build's and those merged into ROOT."""
        entries = [e for e in ZOO.values() if e.recipe is not None and self._seeds_done(e)]
        table = {"command": self.options.command, "smoke": self.options.smoke,
                 "entries": {e.name: self._entry_results(e) for e in entries}, "baselines": self._baselines(),
                 "recipes": self._recipes()}
        outputs = self._outputs()
        with atomic_path(outputs["results.json"]) as tmp:
            tmp.write_text(json.dumps(marked(table), indent=2))
        with atomic_path(outputs["results.md"]) as tmp:
            tmp.write_text(results_markdown(table))
        if self.options.cards_dir is not None:
            for entry in entries:
                seed = self._seeds_done(entry)[0]
                card = self.options.root / entry.name / f"seed{seed}" / "pretrain" / "export" / "README.md"
                with atomic_path(outputs[entry.name]) as tmp:
                    tmp.write_text(card.read_text())
        if self.options.results_file is not None:
            self._ship(table)
        return table

    def _outputs(self) -> dict[str, Path]:
        """What the results step writes (ROOT's results.json and results.md, each entry's card in the cards folder),
        checked to be absent or mimzoo's; the shipped results file is checked as well."""
        root, cards = self.options.root, self.options.cards_dir
        outputs = {"results.json": replaceable(root / RESULTS, results_are_ours, "--root"),
                   "results.md": replaceable(root / "results.md", _markdown_is_ours, "--root")}
        if cards is not None:
            outputs.update({e.name: replaceable(cards / f"{e.name}.md", card_is_ours, "--cards-dir")
                            for e in ZOO.values() if e.recipe is not None})
        if self.options.results_file is not None:
            replaceable(self.options.results_file, results_are_ours, "--results-file")
        return outputs

    def _ship(self, table: dict[str, Any]) -> None:
        """The headline numbers of the entries built into ``results_file``, beside those of other entries already
        there (each build may make a few entries, on another machine)."""
        path = self.options.results_file
        shipped = read_json(path, "restore it from git or remove it") if path.exists() else marked({})
        if not isinstance(shipped.get("entries", {}), dict):
            raise MimzooError(f"{path} is not a zoo results file (its entries are not an object); choose another "
                              "--results-file")
        shipped.setdefault("entries", {}).update({
            name: {"commands": row["commands"], "device": row["device"], "minutes": row["minutes"],
                   "seeds": row["seeds"], **{task: metric["mean"] for task, metric in row["metrics"].items()}}
            for name, row in table["entries"].items()})
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(shipped, indent=2))

    def _seeds_done(self, entry: ZooEntry) -> list[int]:
        return [s for s in entry.seeds if all(self._done(f"{entry.name}/seed{s}/{t}") for t in entry.evals)]

    def _entry_results(self, entry: ZooEntry) -> dict[str, Any]:
        """Mean and spread over the seeds done (a build may have made some of them, other builds the rest)."""
        stages = {k: v for k, v in self.state.items() if k.startswith(f"{entry.name}/")}
        seeds = self._seeds_done(entry)
        metrics = {}
        for task in entry.evals:
            runs = [self.state[f"{entry.name}/seed{s}/{task}"]["results"] for s in seeds]
            values = [run[HEADLINE[task]] for run in runs]
            metrics[task] = {"mean": round(statistics.fmean(values), 2),
                             "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
                             "values": values, "metrics_files": [run["metrics_file"] for run in runs]}
        return {"seeds": seeds, "metrics": metrics,
                "minutes": round(sum(v["seconds"] for v in stages.values()) / 60, 2),
                "device": sorted({v["device"] for v in stages.values()}),
                "commands": sorted({v["command"] for v in stages.values()})}

    def _baselines(self) -> dict[str, Any]:
        return {k: {"value": v["results"][HEADLINE[k.rsplit("/", 1)[1]]], "metrics_file": v["results"]["metrics_file"],
                    "minutes": round(v["seconds"] / 60, 2)}
                for k, v in self.state.items() if k.startswith("baselines/") and k.count("/") == 2 and v["done"]}

    def _recipes(self) -> dict[str, Any]:
        """Each chosen recipe: its candidates' validation scores and the minutes the choice took."""
        recipes: dict[str, Any] = {}
        for key, stage in self.state.items():
            if key.startswith("recipes/") and stage["done"]:
                row = recipes.setdefault(key.rsplit("/", 1)[0], {"candidates": [], "minutes": 0.0})
                task = key.split("/")[2]
                row["candidates"].append({**stage["results"]["candidate"], "val": stage["results"][HEADLINE[task]],
                                          "metrics_file": stage["results"]["metrics_file"]})
                row["minutes"] = round(row["minutes"] + stage["seconds"] / 60, 2)
        for row in recipes.values():
            best = max(row["candidates"], key=lambda c: c["val"])
            row["chosen"] = {k: v for k, v in best.items() if k not in ("val", "metrics_file")}
        return recipes


def report(options: BuildOptions) -> dict[str, Any]:
    """The results, cards and shipped numbers of the stages in ``options.root`` (e.g. builds merged from several
    machines), training nothing; smoke or not as the stages were built."""
    state = read_stages(options.root)
    if not state:
        raise MimzooError(f"{options.root} holds no zoo stages ({STAGES}/ is missing or empty); pass the --root of a "
                          "zoo build")
    return ZooBuild(replace(options, smoke=next(iter(state.values()))["smoke"])).write_results()


def _markdown_is_ours(path: Path) -> bool:
    return path.is_file() and path.read_text(errors="replace").startswith(MARKDOWN_MARK)


def results_markdown(table: dict[str, Any]) -> str:
    tasks = sorted({task for row in table["entries"].values() for task in row["metrics"]})
    lines = [MARKDOWN_MARK,
             f"Written by `{table['command']}`" + (" (smoke: a few steps, not results)" if table["smoke"] else "")
             + "; the commands that built each entry are in results.json", "",
             "| entry | seeds | " + " | ".join(tasks) + " | minutes | device |",
             "|---|---|" + "---|" * len(tasks) + "---|---|"]
    for name, row in table["entries"].items():
        cells = []
        for task in tasks:
            metric = row["metrics"].get(task)
            cells.append("" if metric is None else f"{metric['mean']:.2f}"
                         + (f" ± {metric['std']:.2f}" if metric["std"] is not None else ""))
        lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | {row['minutes']:.1f} | {', '.join(row['device'])} |")
    for name, row in table["baselines"].items():
        task = name.rsplit("/", 1)[1]
        cells = [f"{row['value']:.2f}" if t == task else "" for t in tasks]
        lines.append(f"| {name} (random init) | 1 | " + " | ".join(cells) + f" | {row['minutes']:.1f} | |")
    for name, row in table.get("recipes", {}).items():
        chosen = ", ".join(f"{k} {v:g}" for k, v in row["chosen"].items())
        lines.append(f"| {name}: {chosen}, the best of {len(row['candidates'])} on the validation carve | | "
                     + " | ".join("" for _ in tasks) + f" | {row['minutes']:.1f} | |")
    return "\n".join(lines) + "\n"


def device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device) if device.startswith("cuda") else None)
    return f"cpu ({platform.machine()})"


def read_stages(root: Path) -> dict[str, Any]:
    """Every stage record under ROOT/stages, by stage key."""
    folder = root / STAGES
    return {path.relative_to(folder).with_suffix("").as_posix(): read_json(path, "remove it to run the stage again")
            for path in sorted(folder.rglob("*.json"))}


def reference_entry(arch: str, data: str) -> ZooEntry:
    """Whose encoder chooses the downstream recipes of an arch and data: the zoo's MAE entry of them (MAE is every
    method's baseline), else the first entry of them."""
    same = [e for e in ZOO.values() if e.recipe is not None and (e.arch, e.data) == (arch, data)]
    return next((e for e in same if e.method == "mae"), same[0])


def _buildable(name: str) -> ZooEntry:
    entry = ZOO.get(name)
    if entry is None or entry.recipe is None:
        built = ", ".join(e.name for e in ZOO.values() if e.recipe is not None)
        raise MimzooError(f"{name!r} is not a zoo entry mimzoo builds; choose from: {built}")
    return entry
