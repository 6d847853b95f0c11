"""Atomic writes: the umask's modes, no temporaries left after a crash (kill -9), a folder never missing."""

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
import torch
from huggingface_hub import scan_cache_dir

from mimzoo.engine import atomic
from mimzoo.engine.atomic import atomic_dir, atomic_path, tidy
from mimzoo.engine.checkpoint import save_checkpoint
from mimzoo.engine.metrics_log import append_metrics, truncate_metrics
from mimzoo.hub import LocalDirBackend, export_run, push
from mimzoo.hub.backends import write_snapshot


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_write_respects_the_umask(umask, finished_run, tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", {"step": 1})
    with atomic_path(run / "config.json") as tmp:  # as pretrain writes it
        tmp.write_text("{}")
    append_metrics(run, {"step": 1})
    append_metrics(run, {"step": 2})
    truncate_metrics(run, 1)  # rewritten atomically on resume
    export = export_run(finished_run[0], tmp_path / "exports" / "tiny")
    shared = tmp_path / "shared"
    push(export, "lab/tiny", LocalDirBackend(shared))

    files = [run / "checkpoint.pt", run / "config.json", run / "metrics.jsonl", *export.iterdir(),
             *shared.rglob("*")]
    folders = [run, export.parent, export, shared] + [p for p in files if p.is_dir()]
    assert len(folders) > 6
    assert {str(p): oct(mode(p)) for p in files if p.is_file()} == {
        str(p): oct(0o666 & ~umask) for p in files if p.is_file()}
    assert {str(p): oct(mode(p)) for p in folders} == {str(p): oct(0o777 & ~umask) for p in folders}


def crash(write) -> None:
    """Run ``write`` in a forked child that kills itself with SIGKILL (no cleanup, as kill -9) where it says so."""
    pid = os.fork()
    if pid == 0:
        try:
            write()
        finally:
            os._exit(3)  # never reached when write killed itself
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the write was not killed"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_next_write_removes_what_a_killed_write_left(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", {"step": 1})
    (run / ".checkpoint.pt.u7x2k9").write_text("a user's file that looks like a temporary")

    def killed_mid_save():
        monkeypatch.setattr(torch, "save", lambda state, path: (Path(path).write_bytes(b"half"), die()))
        save_checkpoint(run / "checkpoint.pt", {"step": 2})

    def killed_mid_export():
        with atomic_dir(run / "export") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            die()

    def left() -> list[str]:
        return sorted(p.name.split(".mimzoo-")[0] for p in run.iterdir() if p.name != ".checkpoint.pt.u7x2k9")

    crash(killed_mid_save)
    assert left() == [".checkpoint.pt", "checkpoint.pt"]  # its temporary; the checkpoint is still the last one
    assert torch.load(run / "checkpoint.pt", weights_only=True) == {"step": 1}
    crash(killed_mid_export)  # the next write tidied the first temporary, and left its own
    assert left() == [".export", "checkpoint.pt"]

    save_checkpoint(run / "checkpoint.pt", {"step": 3})
    assert sorted(p.name for p in run.iterdir()) == [".checkpoint.pt.u7x2k9", "checkpoint.pt"]

    with atomic_path(run / "checkpoint.pt") as live:  # a write in progress (this process) is never tidied away
        live.write_text("x")
        tidy(run)
        assert live.exists()


def test_a_folder_replace_killed_between_its_renames_is_restored(tmp_path, monkeypatch):
    """Where the file system cannot swap two folders atomically, the old one is renamed aside first."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    export = tmp_path / "export"
    with atomic_dir(export) as tmp:
        (tmp / "model.safetensors").write_text("v1")
    with atomic_dir(export) as tmp:  # the fallback replaces it
        (tmp / "model.safetensors").write_text("v2")
    assert (export / "model.safetensors").read_text() == "v2"

    def killed_between_renames():
        calls = []

        def renaming_then_die(rename):
            def rename_then_die(src, dst):
                calls.append(dst)
                if len(calls) == 2:
                    die()
                rename(src, dst)
            return rename_then_die

        monkeypatch.setattr(os, "rename", renaming_then_die(os.rename))
        monkeypatch.setattr(os, "replace", renaming_then_die(os.replace))
        with atomic_dir(export) as tmp:
            (tmp / "model.safetensors").write_text("v3")

    crash(killed_between_renames)
    assert not export.exists()  # the moment the fallback cannot avoid
    with atomic_path(tmp_path / "checkpoint.pt") as tmp:  # the next write in the folder puts it back
        tmp.write_text("ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "export"]
    assert (export / "model.safetensors").read_text() == "v2"


def test_a_killed_push_to_a_backend_folder_adds_no_revision(finished_run, tmp_path, monkeypatch):
    shared, export = tmp_path / "shared", finished_run[0] / "export"
    repo = shared / "models--lab--tiny"

    def killed_mid_copy():
        monkeypatch.setattr(shutil, "copyfile", lambda src, dst: (Path(dst).write_bytes(b"half"), die()))
        write_snapshot(shared, "lab/tiny", "main", export)

    crash(killed_mid_copy)
    assert [r.commit_hash for r in _revisions(shared)] == []  # the temporary is not in snapshots/
    assert any(p.name.startswith(".") for p in repo.iterdir())

    snapshot = write_snapshot(shared, "lab/tiny", "main", export)
    assert [(r.commit_hash, set(r.refs)) for r in _revisions(shared)] == [(snapshot.name, {"main"})]
    assert sorted(p.name for p in repo.iterdir()) == ["refs", "snapshots"]
    assert json.loads((snapshot / "mimzoo.json").read_text())["method"] == "mae"


def _revisions(cache: Path) -> list:
    info = scan_cache_dir(cache)
    assert info.warnings == []
    return [revision for repo in info.repos for revision in repo.revisions]
