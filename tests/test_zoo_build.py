"""`mimzoo zoo build` at smoke scale: the whole chain, stopped and continued, numbers traceable to metrics files."""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_pretrain_cli import error_line
from test_segment import write_pack

import mimzoo.engine.zoo_build as zoo_build
from conftest import REPO, TINY_ARCH
from mimzoo.data.sources import BUILTIN_SAMPLE
from mimzoo.errors import MimzooError
from mimzoo.zoo import ZooEntry

ENTRY, OTHER = "mae-tiny-test", "pixmim-tiny-test"


@pytest.fixture()
def zoo_setup(tmp_path, monkeypatch):
    """Two one-seed test entries (MAE and PixMIM) as the whole zoo, a 32/10-image CIFAR-10 pack under the zoo's file
    name, a two-candidate sweep."""
    data = np.load(BUILTIN_SAMPLE)
    packs = {}
    for split, count in (("train", 32), ("test", 10)):
        offsets, buffer = data[f"{split}_offsets"], data[f"{split}_jpeg"]
        picks = np.linspace(0, len(offsets) - 2, count).astype(int)  # spread over the class-sorted files
        chunks = [buffer[offsets[i]:offsets[i + 1]] for i in picks]
        packs[f"{split}_jpeg"] = np.concatenate(chunks)
        packs[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(c) for c in chunks])])
        packs[f"{split}_labels"] = data[f"{split}_labels"][picks]
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / zoo_build.DATA_FILES["cifar10"], classes=data["classes"], **packs)
    entries = [ZooEntry(name, method, TINY_ARCH, "cifar10", 1, f"mimzoo/{name}", "test",
                        {"method": method, "arch": TINY_ARCH, "epochs": 1, "blr": 1.5e-4}, (0,), evals)
               for name, method, evals in ((ENTRY, "mae", ("knn", "finetune")), (OTHER, "pixmim", ("finetune",)))]
    monkeypatch.setattr(zoo_build, "ZOO", {e.name: e for e in entries})
    monkeypatch.setitem(zoo_build.SWEEPS, "finetune", {"blr": (5e-4, 1e-3)})
    return zoo_build.BuildOptions(root=tmp_path / "zoo", data_dir=tmp_path / "data", device="cpu", workers=0,
                                  smoke=True, cards_dir=tmp_path / "cards", results_file=tmp_path / "zoo_results.json",
                                  command="mimzoo zoo build --smoke")


def test_a_stopped_build_continues_and_every_number_has_its_metrics_file(zoo_setup, monkeypatch):
    real_finetune = zoo_build.run_finetune
    calls = []

    def stopped_at_the_final_finetune(inp, cfg, reporter):
        calls.append((inp.val_fraction, inp.test))
        if inp.val_fraction is None:  # the test-split run, after the sweep on the validation carve
            raise KeyboardInterrupt
        return real_finetune(inp, cfg, reporter)

    monkeypatch.setattr(zoo_build, "run_finetune", stopped_at_the_final_finetune)
    with pytest.raises(KeyboardInterrupt):
        zoo_build.ZooBuild(zoo_setup).run([])
    state = zoo_build.read_stages(zoo_setup.root)
    # two candidates on the validation carve with MAE's encoder (they never measure test), then the stopped test run
    assert calls == [(0.1, False), (0.1, False), (None, True)]
    recipe = f"recipes/{TINY_ARCH}-cifar10/finetune"
    for i in (0, 1):
        assert state[f"{recipe}/val{i}"]["results"]["backbone"] == ENTRY
        candidate = json.loads((zoo_setup.root / state[f"{recipe}/val{i}"]["results"]["metrics_file"]).read_text())
        assert candidate["split"] == "val-carve" and "test" not in candidate["splits"]
    done = [f"{ENTRY}/seed0/pretrain", f"{ENTRY}/seed0/knn", f"{recipe}/val0", f"{recipe}/val1"]
    assert sorted(k for k, v in state.items() if v["done"]) == sorted(done)
    assert state[f"{ENTRY}/seed0/finetune"]["seconds"] >= 0 and not state[f"{ENTRY}/seed0/finetune"]["done"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a done stage ran again")

    real_knn = zoo_build.run_knn

    def baselines_only(inp, cfg, reporter):
        if not inp.backbone.startswith("random:"):
            must_not_run()
        return real_knn(inp, cfg, reporter)

    real_pretrain = zoo_build.pretrain

    def others_only(cfg, **kwargs):
        if ENTRY in cfg.out:
            must_not_run()
        return real_pretrain(cfg, **kwargs)

    monkeypatch.setattr(zoo_build, "pretrain", others_only)
    monkeypatch.setattr(zoo_build, "run_knn", baselines_only)
    calls.clear()
    monkeypatch.setattr(zoo_build, "run_finetune", lambda inp, cfg, rep: calls.append(inp.val_fraction)
                        or real_finetune(inp, cfg, rep))
    earlier = {"command": "mimzoo zoo build earlier-entry", "knn": 50.0}  # built by another call, on another machine
    # the results step replaces only mimzoo's files, checked before any work: not a user's card or results file
    zoo_setup.results_file.write_text(json.dumps({"entries": {"earlier-entry": earlier}}))
    with pytest.raises(MimzooError, match="zoo_results.json exists and mimzoo did not write it"):
        zoo_build.ZooBuild(zoo_setup)
    zoo_setup.results_file.write_text(json.dumps({"software": "mimzoo", "entries": {"earlier-entry": earlier}}))
    zoo_setup.cards_dir.mkdir()
    (zoo_setup.cards_dir / f"{OTHER}.md").write_text("---\ntags: [mine]\n---\nmy card")
    with pytest.raises(MimzooError, match=f"{OTHER}.md exists and mimzoo did not write it"):
        zoo_build.ZooBuild(zoo_setup)
    (zoo_setup.cards_dir / f"{OTHER}.md").unlink()
    table = zoo_build.ZooBuild(zoo_setup).run([])
    # the other entry and the baseline take the recipe MAE's encoder chose: no sweep of their own
    assert calls == [None, None, None]
    state = zoo_build.read_stages(zoo_setup.root)
    assert not any(k.startswith(f"{OTHER}/seed0/finetune/val") for k in state)

    row = table["entries"][ENTRY]
    for task in ("knn", "finetune"):
        results = json.loads((zoo_setup.root / row["metrics"][task]["metrics_files"][0]).read_text())
        assert row["metrics"][task]["values"] == [results[zoo_build.HEADLINE[task]]]
    chosen = state[f"{ENTRY}/seed0/finetune"]["results"]["chosen"]
    assert chosen["blr"] in (5e-4, 1e-3) and state[f"{OTHER}/seed0/finetune"]["results"]["chosen"] == chosen
    assert table["recipes"][recipe]["chosen"] == chosen and len(table["recipes"][recipe]["candidates"]) == 2
    assert sorted(table["baselines"]) == [f"baselines/{TINY_ARCH}-cifar10/{task}" for task in ("finetune", "knn")]
    for baseline in table["baselines"].values():
        assert json.loads((zoo_setup.root / baseline["metrics_file"]).read_text())["top1"] == baseline["value"]

    # the card (copied for model_cards/) holds the test-split numbers only, never the validation-carve runs
    card = (zoo_setup.cards_dir / f"{ENTRY}.md").read_text()
    record = json.loads((zoo_setup.root / ENTRY / "seed0" / "pretrain" / "export" / "mimzoo.json").read_text())
    assert sorted((r["task"], r["split"]) for r in record["results"]) == [("finetune", "test"), ("knn", "test")]
    assert "model-index" in card
    shipped = json.loads(zoo_setup.results_file.read_text())
    assert shipped["entries"][ENTRY]["knn"] == row["metrics"]["knn"]["mean"]
    assert shipped["entries"]["earlier-entry"] == earlier
    assert shipped["entries"][ENTRY]["commands"] == shipped["entries"][OTHER]["commands"] == [zoo_setup.command]
    markdown = (zoo_setup.root / "results.md").read_text()
    assert "smoke" in markdown
    assert f"| {recipe}: blr {chosen['blr']:g}, the best of 2 on the validation carve |" in markdown


def test_unknown_entry_and_missing_data(zoo_setup, cli, tmp_path):
    result = cli("zoo", "build", "mae-vit-base-in1k", "--root", tmp_path / "z")
    assert result.exit_code == 1 and "not a zoo entry mimzoo builds" in result.output
    result = cli("zoo", "build", ENTRY, "--root", tmp_path / "z", "--data-dir", tmp_path / "nowhere", "--smoke")
    assert result.exit_code == 1 and "--data-dir" in result.output and "Traceback" not in result.output
    (tmp_path / "notes.txt").write_text("mine\n")
    line = error_line(cli("zoo", "build", ENTRY, "--root", tmp_path / "notes.txt", "--smoke"))
    assert "--root" in line and "notes.txt is a file, not a folder" in line
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_seeds_built_apart_merge_by_copying_their_folders(zoo_setup, monkeypatch, tmp_path, cli):
    entry = ZooEntry("two-seeds", "mae", TINY_ARCH, "cifar10", 1, "mimzoo/two-seeds", "test",
                     {"method": "mae", "arch": TINY_ARCH, "epochs": 1, "blr": 1.5e-4}, (0, 1), ("knn",))
    monkeypatch.setattr(zoo_build, "ZOO", {entry.name: entry})
    for seed in (0, 1):  # two machines, one seed each
        options = replace(zoo_setup, root=tmp_path / f"machine{seed}", seed=seed, baselines=False, cards_dir=None,
                          data_device="gpu")  # the device path (here on the CPU), recorded in the run's config
        table = zoo_build.ZooBuild(options).run([entry.name])
        assert table["entries"][entry.name]["seeds"] == [seed]
        config = json.loads((options.root / entry.name / f"seed{seed}" / "pretrain" / "config.json").read_text())
        assert config["data_device"] == "gpu"
    merged = tmp_path / "merged"
    for seed in (0, 1):
        shutil.copytree(tmp_path / f"machine{seed}", merged, dirs_exist_ok=True)
    # from the command line: every stage is done, so the build only writes and prints the table of both seeds
    result = cli("zoo", "build", entry.name, "--root", merged, "--data-dir", zoo_setup.data_dir, "--smoke",
                 "--no-baselines", "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "| two-seeds | 2 |" in result.output
    table = json.loads((merged / "results.json").read_text())
    knn = table["entries"][entry.name]["metrics"]["knn"]
    assert table["entries"][entry.name]["seeds"] == [0, 1] and len(knn["values"]) == 2 and knn["std"] is not None
    assert all((merged / path).is_file() for path in knn["metrics_files"])  # paths relative to the build's root
    # or, training nothing and naming no entry: the table of every entry done in the merged folder
    (merged / "results.md").write_text("my notes")
    assert "results.md exists and mimzoo did not write it" in error_line(cli("zoo", "report", "--root", merged))
    (merged / "results.md").unlink()
    (merged / "results.json").unlink()
    result = cli("zoo", "report", "--root", merged, "--results-file", tmp_path / "shipped.json")
    assert result.exit_code == 0, result.output
    assert "| two-seeds | 2 |" in result.output and "(smoke: a few steps, not results)" in result.output
    reported = json.loads((merged / "results.json").read_text())
    assert reported["entries"] == table["entries"]
    assert json.loads((tmp_path / "shipped.json").read_text())["entries"][entry.name]["knn"] == knn["mean"]
    # a real build never takes a smoke stage for done
    with pytest.raises(MimzooError, match=r"holds stages of a smoke build \(stages/two-seeds/seed0/.*\.json\), "
                                          "which a real build must not mix"):
        zoo_build.ZooBuild(replace(zoo_setup, root=merged, smoke=False))
    result = cli("zoo", "report", "--root", tmp_path / "nothing")
    assert result.exit_code == 1 and "holds no zoo stages" in result.output
    # a stage left to do whose encoder stayed on the other machine: one line, never a half-built entry
    shutil.rmtree(merged / entry.name / "seed1" / "pretrain" / "export")
    (merged / "stages" / entry.name / "seed1" / "knn.json").unlink()
    with pytest.raises(MimzooError, match="seed1/pretrain/export/model.safetensors is gone, though "
                                          ".*seed1/pretrain.json records"):
        zoo_build.ZooBuild(replace(zoo_setup, root=merged, baselines=False, cards_dir=None)).run([entry.name])
    # the random-init baselines need no encoder: a later call (another machine) runs them after the entry's stages
    shutil.rmtree(merged / entry.name / "seed0" / "pretrain" / "export")
    table = zoo_build.ZooBuild(replace(zoo_setup, root=merged, seed=0, cards_dir=None)).run([entry.name])
    assert list(table["baselines"]) == [f"baselines/{TINY_ARCH}-cifar10/knn"]
    with pytest.raises(MimzooError, match="built with seeds 0, 1, not 5; choose one of those with --seed"):
        zoo_build.ZooBuild(replace(zoo_setup, seed=5)).run([entry.name])


def test_the_camvid_chain_segments_on_the_test_split_beside_a_random_init_dpt(zoo_setup, monkeypatch):
    write_pack(zoo_setup.data_dir / zoo_build.DATA_FILES["camvid"], (("train", 16), ("val", 2), ("test", 3)), (64, 64))
    entry = ZooEntry("seg-test", "mae", TINY_ARCH, "camvid", 1, "mimzoo/seg-test", "test",
                     {"method": "mae", "arch": TINY_ARCH, "epochs": 1, "blr": 1.5e-4}, (0,), ("segment",))
    monkeypatch.setattr(zoo_build, "ZOO", {entry.name: entry})
    table = zoo_build.ZooBuild(replace(zoo_setup, cards_dir=None)).run([])
    segment = table["entries"][entry.name]["metrics"]["segment"]
    results = json.loads((zoo_setup.root / segment["metrics_files"][0]).read_text())
    assert results["split"] == "test" and results["splits"]["val"]["images"] == 3  # the pack's test split
    assert results["miou"] == segment["values"][0]
    baseline = table["baselines"][f"baselines/{TINY_ARCH}-camvid/segment"]
    assert json.loads((zoo_setup.root / baseline["metrics_file"]).read_text())["miou"] == baseline["value"]


def test_an_entry_built_over_two_leases_takes_its_encoder_and_records_across(zoo_setup, monkeypatch, tmp_path):
    """benchmarks/zoo_carry.py: a lease that pretrains and is stopped in a fine-tune sends back its records, the small
    files of the stages done and the encoder in parts; what did not all come back changes nothing here; the next
    lease, given the rest, evaluates the same encoder and sends none back."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import zoo_carry

    monkeypatch.setitem(zoo_build.SWEEPS, "finetune", {})
    real_finetune = zoo_build.run_finetune
    lease1 = replace(zoo_setup, root=tmp_path / "lease1", baselines=False, cards_dir=None, results_file=None)

    def stopped(inp, cfg, reporter):  # the lease ends inside the fine-tune, which has written a file of its own
        Path(cfg.out).mkdir(parents=True)
        (Path(cfg.out) / "metrics.jsonl").write_text("{}\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo_build, "run_finetune", stopped)
    with pytest.raises(KeyboardInterrupt):
        zoo_build.ZooBuild(lease1).run([ENTRY])
    returned, export = tmp_path / "returned", Path(ENTRY) / "seed0" / "pretrain" / "export"
    encoder = (lease1.root / export / "model.safetensors").read_bytes()
    zoo_carry.send(lease1.root, returned, ENTRY, carried=None, part_bytes=len(encoder) // 3)
    parts = sorted(p.name for p in returned.glob("weights-*.tar.*"))
    assert parts == [f"weights-{ENTRY}.tar.{i:02d}" for i in range(len(parts))] and len(parts) >= 4
    with tarfile.open(returned / f"zoo-{ENTRY}.tar.gz") as tar:
        sent = tar.getnames()
    assert f"stages/{ENTRY}/seed0/finetune.json" in sent  # its seconds count, its files stay behind
    assert not any(name.startswith(f"{ENTRY}/seed0/finetune/") for name in sent)
    assert f"{export.as_posix()}/mimzoo.json" in sent and f"{ENTRY}/seed0/knn/test/results.json" in sent
    assert not any(name.endswith((".safetensors", ".pt")) for name in sent)

    committed, weights = tmp_path / "committed", tmp_path / "weights"
    (weights / export).mkdir(parents=True)
    (weights / export / "model.safetensors").write_bytes(b"an earlier copy")

    def received_nothing() -> None:
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
                      and not p.is_relative_to(returned) and not p.is_relative_to(lease1.root)
                      and not p.is_relative_to(zoo_setup.data_dir)) == [
            f"weights/{export.as_posix()}/model.safetensors"]
        assert (weights / export / "model.safetensors").read_bytes() == b"an earlier copy"

    last = returned / parts[-1]
    data = last.read_bytes()
    last.unlink()  # the device tool left a file out
    with pytest.raises(SystemExit, match=f"{parts[-1]} did not come back; nothing was received"):
        zoo_carry.receive(returned, committed, weights)
    received_nothing()
    last.write_bytes(data)
    middle = returned / parts[1]
    good = middle.read_bytes()
    middle.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])  # or one came back damaged
    with pytest.raises(SystemExit, match="does not match its checksum; nothing was received"):
        zoo_carry.receive(returned, committed, weights)
    received_nothing()
    middle.write_bytes(good)
    small = returned / f"zoo-{ENTRY}.tar.gz"
    whole = small.read_bytes()
    small.write_bytes(whole[: len(whole) // 2])  # or cut short
    with pytest.raises(SystemExit, match=f"zoo-{ENTRY}.tar.gz does not unpack .*nothing was received"):
        zoo_carry.receive(returned, committed, weights)
    received_nothing()
    small.write_bytes(whole)
    zoo_carry.receive(returned, committed, weights)
    assert (weights / export / "model.safetensors").read_bytes() == encoder
    assert sorted(p.relative_to(weights).as_posix() for p in weights.rglob("*") if p.is_file()) == [
        f"{export.as_posix()}/model.safetensors"]
    assert sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file()) == sorted(sent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["committed", "data", "lease1", "returned", "weights"]
    # without the encoder, the next lease says what to carry, never pretrains it again
    lease2 = replace(lease1, root=tmp_path / "lease2")
    shutil.copytree(committed, lease2.root)
    with pytest.raises(MimzooError, match="model.safetensors is gone, though .*pretrain.json records its "
                                          "pretraining as done .*restore or carry it"):
        zoo_build.ZooBuild(lease2).run([ENTRY])
    # with it (zoo_session.sh: the carried export folder, then the committed files beside it), the fine-tune runs
    shutil.copytree(weights, lease2.root, dirs_exist_ok=True)
    carried = tmp_path / "carried.txt"
    carried.write_text("\n".join(p.as_posix() for p in zoo_carry.encoders(lease2.root)))
    monkeypatch.setattr(zoo_build, "run_finetune", real_finetune)
    monkeypatch.setattr(zoo_build, "pretrain", lambda *a, **k: pytest.fail("pretrained again"))
    zoo_build.ZooBuild(lease2).run([ENTRY])
    state = zoo_build.read_stages(lease2.root)
    assert all(state[f"{ENTRY}/seed0/{key}"]["done"] for key in ("pretrain", "knn", "finetune"))
    assert ("finetune", "test") in {(r["task"], r["split"])
                                    for r in json.loads((lease2.root / export / "mimzoo.json").read_text())["results"]}
    # the encoder came with the tree: not sent back
    zoo_carry.send(lease2.root, tmp_path / "returned2", ENTRY, carried=carried)
    assert [p.name for p in (tmp_path / "returned2").iterdir()] == [f"zoo-{ENTRY}.tar.gz"]
