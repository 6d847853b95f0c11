"""A user's files are never replaced: figures, results.json and a segment model overwrite only what mimzoo wrote,
never through a link, and the refusal comes before any work."""

import errno
import json
import os
import stat
import tempfile

import pytest
from PIL import Image
from test_pretrain_cli import error_line
from test_segment import write_generic

from conftest import tiny_pretrain_args
from mimzoo.errors import MimzooError
from mimzoo.viz.plots import plot_run


@pytest.fixture()
def run_with_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1 / s}) for s in range(1, 4)))
    return run


def test_a_figure_replaces_only_a_figure_mimzoo_wrote(run_with_metrics, tmp_path):
    mine = tmp_path / "mine.png"
    Image.new("RGB", (4, 4), "red").save(mine)
    before = mine.read_bytes()
    with pytest.raises(MimzooError, match="mimzoo did not write it"):
        plot_run(run_with_metrics, mine)
    assert mine.read_bytes() == before
    link = tmp_path / "link.png"
    link.symlink_to(mine)
    with pytest.raises(MimzooError, match="is a link"):
        plot_run(run_with_metrics, link)
    assert mine.read_bytes() == before
    for name in ("curves.png", "curves.jpg"):  # the mark mimzoo leaves: a PNG text chunk, a JPEG comment
        plot_run(run_with_metrics, tmp_path / name)
        plot_run(run_with_metrics, tmp_path / name)  # its own figure is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.jpg", "curves.png", "link.png", "mine.png", "run"]
    assert stat.S_IMODE((tmp_path / "curves.png").stat().st_mode) == 0o666 & ~_umask()
    with pytest.raises(MimzooError, match="give it a .png or .jpg extension"):
        plot_run(run_with_metrics, tmp_path / "curves.txt")
    plot_run(run_with_metrics, tmp_path / "new" / ".." / "up.png")
    assert (tmp_path / "up.png").is_file() and not (tmp_path / "new").exists()


def test_visualize_refuses_a_users_file_before_loading_anything(cli, export, tmp_path):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"not mimzoo's")
    assert "mimzoo did not write it" in error_line(cli("visualize", tmp_path / "nowhere", "--out", mine))
    assert mine.read_bytes() == b"not mimzoo's"


def test_downstream_refuses_a_foreign_results_file_or_out_before_any_work(cli, export, image_folder, tmp_path):
    args = ["knn", export, "--data", image_folder, "--val-fraction", "0.25", "--limit", "10", "--workers", "0"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.json").write_text('{"accuracy": 99}')
    assert "mimzoo did not write it" in error_line(cli(*args, "--out", tmp_path / "mine"))
    assert (tmp_path / "mine" / "results.json").read_text() == '{"accuracy": 99}'
    (tmp_path / "file").write_text("mine")
    assert "is a file, not a folder" in error_line(cli(*args, "--out", tmp_path / "file"))
    assert "file is a file" in error_line(cli(*args, "--out", tmp_path / "file" / "sub"))
    assert json.loads((export / "mimzoo.json").read_text())["results"] == []  # no work was done, nothing recorded
    assert cli(*args, "--out", tmp_path / "knn").exit_code == 0
    assert cli(*args, "--out", tmp_path / "knn").exit_code == 0  # its own results.json is replaced
    assert json.loads((tmp_path / "knn" / "results.json").read_text())["software"] == "mimzoo"


def test_segment_keeps_a_users_model_folder_and_writes_its_own_with_the_umask(cli, export, tmp_path):
    data = write_generic(tmp_path / "seg", splits=(("train", 2), ("val", 1)))
    args = ["segment", export, "--data", data, "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2",
            "--crop-size", "32", "--workers", "0", "--previews", "1"]
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "notes.txt").write_text("mine")
    assert "mimzoo did not write it" in error_line(cli(*args, "--out", tmp_path / "mine"))
    assert sorted(p.name for p in (tmp_path / "mine").rglob("*")) == ["model", "notes.txt"]
    assert cli(*args, "--out", tmp_path / "out").exit_code == 0
    model = tmp_path / "out" / "model"
    assert sorted(p.name for p in model.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in model.iterdir()} == {0o666 & ~_umask()}  # smp's own: 0600
    result = cli(*args, "--out", tmp_path / "out", "--resume")  # nothing left to train: rewrites its own files
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "checkpoint.pt", "model", "predictions.png", "results.json"]


def test_pretrain_export_and_import_refuse_an_out_they_cannot_write_up_front(cli, npz_pack, finished_run, tmp_path):
    (tmp_path / "file").write_text("mine")
    assert "is a file, not a folder" in error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "file")))
    assert "file is a file" in error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "file" / "run")))
    assert "cannot write into /sys" in error_line(cli(*tiny_pretrain_args(npz_pack, "/sys/mimzoo-run")))
    assert "cannot write into /sys" in error_line(cli("export", finished_run[0], "--out", "/sys/mimzoo-export"))
    assert "cannot write into /sys" in error_line(cli("import", tmp_path / "any.pth", "--out", "/sys/mimzoo-import"))
    assert (tmp_path / "file").read_text() == "mine"


def test_a_read_only_export_is_used_but_not_recorded(cli, export, image_folder, tmp_path, monkeypatch):
    real = tempfile.TemporaryFile

    def read_only_export(*args, dir=None, **kwargs):  # as a read-only mount answers (chmod does not stop root)
        if dir is not None and os.path.samefile(dir, export):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_export)
    result = cli("knn", export, "--data", image_folder, "--val-fraction", "0.25", "--limit", "10", "--workers", "0",
                 "--out", tmp_path / "knn")
    assert result.exit_code == 0, result.output
    assert "cannot be written: the result is not recorded in its model card" in " ".join(result.output.split())
    assert json.loads((export / "mimzoo.json").read_text())["results"] == []
    assert (tmp_path / "knn" / "results.json").is_file()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_run_folder_inside_the_image_folder_is_refused(cli, image_folder):
    before = sorted(p for p in image_folder.rglob("*"))
    line = error_line(cli(*tiny_pretrain_args(image_folder, image_folder / "runs" / "mae")))
    assert "lies inside --data" in line and "choose an --out outside the data" in line
    assert sorted(p for p in image_folder.rglob("*")) == before
