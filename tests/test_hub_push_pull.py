"""Push and pull without a network: HfApi patched to upload into an offline Hugging Face cache, and the local
folder backend. What comes back loads in plain timm (a process that never imports mimzoo) and as an SMP DPT encoder."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import httpx
from safetensors.torch import load_file
from test_pretrain_cli import error_line

from conftest import REPO, run_python
from mimzoo.hub.backends import write_snapshot
from mimzoo.viz.grid import DEMO_PHOTOS
from mimzoo.zoo import ZOO, ZooEntry

TOKEN = "hf_secret_token_for_tests_0123456789"
# appended to the card's own plain-timm snippet, run as it stands in a fresh interpreter
AFTER_THE_CARDS_SNIPPET = """
import json, sys
assert model.pretrained_cfg["tag"].startswith("mimzoo_mae_"), model.pretrained_cfg
config = timm.data.resolve_model_data_config(model)
assert features.shape[0] == 1 and "mimzoo" not in sys.modules
torch.manual_seed(0)
torch.save(model.forward_features(torch.randn(2, 3, 32, 32)), sys.argv[1])
json.dump({k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}, open(sys.argv[2], "w"))
"""


def cards_timm_snippet(card: ModelCard) -> str:
    block = card.text.split("With plain timm (no mimzoo needed):")[1].split("```python\n")[1].split("```")[0]
    return "import torch\n" + block.replace("image.jpg", str(DEMO_PHOTOS / "coffee.jpg"))


@pytest.fixture()
def export(finished_run, tmp_path):
    return shutil.copytree(finished_run[0] / "export", tmp_path / "export")


@pytest.fixture()
def fake_hub(hf_cache, monkeypatch):
    """HfApi whose uploads land in the offline cache; returns the calls it saw."""
    calls = []

    def repo_exists(self, repo_id, **kwargs):
        return (hf_cache / f"models--{repo_id.replace('/', '--')}").is_dir()

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def update_repo_settings(self, repo_id, **kwargs):
        calls.append(("update_repo_settings", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, revision=None, **kwargs):
        calls.append(("upload_folder", repo_id, {"revision": revision, "token": self.token}))
        write_snapshot(hf_cache, repo_id, revision or "main", Path(folder_path))

    for name, fake in [("repo_exists", repo_exists), ("create_repo", create_repo), ("create_branch", create_branch),
                       ("update_repo_settings", update_repo_settings), ("upload_folder", upload_folder)]:
        monkeypatch.setattr(HfApi, name, fake)
    return calls


def same_encoder(model, export) -> bool:
    saved, state = load_file(export / "model.safetensors"), model.state_dict()
    return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


def zoo_row(result) -> list[str]:
    """name, hub repo and cached or not of the test entry in `mimzoo list`, whose lines fit 80 columns (the
    runner's width): a two-line header, then four lines and a blank one per entry, none wrapped."""
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3 + 5 * len(ZOO) and all(len(line) <= 80 for line in lines), result.output
    at = lines.index(next(line for line in lines if line.startswith("lab-tiny")))
    name, cached = lines[at].split(maxsplit=1)
    return [name, lines[at + 1].strip(), cached]


def test_push_to_the_hub_then_pull_and_load_in_timm_and_smp(export, fake_hub, hf_cache, cli, tmp_path):
    import segmentation_models_pytorch as smp

    result = cli("push", export, "--repo-id", "org/tiny", "--private", "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert "pushed" in result.output and TOKEN not in result.output
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_folder"]
    assert fake_hub[0][2]["private"] is True and fake_hub[1][2]["token"] == TOKEN

    result = cli("pull", "org/tiny")
    assert result.exit_code == 0, result.output
    snapshot = Path(result.stdout.strip().splitlines()[0])
    assert snapshot.parent.parent == hf_cache / "models--org--tiny"
    card = ModelCard.load(snapshot / "README.md")  # the pushed card names its repo
    assert 'timm.create_model("hf-hub:org/tiny"' in card.text and card.data.library_name == "timm"

    check = run_python(cards_timm_snippet(card) + AFTER_THE_CARDS_SNIPPET, str(tmp_path / "feats.pt"),
                       str(tmp_path / "config.json"))
    assert check.returncode == 0, check.stderr
    expected = json.loads((export / "config.json").read_text())["pretrained_cfg"]  # the export's preprocessing
    config = json.loads((tmp_path / "config.json").read_text())
    assert [config[k] for k in ("input_size", "mean", "std", "crop_pct")] == [
        expected[k] for k in ("input_size", "mean", "std", "crop_pct")]
    from mimzoo.hub import load_backbone

    model, _ = load_backbone("hf-hub:org/tiny")
    torch.manual_seed(0)
    assert torch.allclose(model.eval().forward_features(torch.randn(2, 3, 32, 32)), torch.load(tmp_path / "feats.pt"),
                          atol=1e-6)

    dpt = smp.DPT(encoder_name="tu-hf-hub:org/tiny", encoder_weights="imagenet", classes=3,
                  dynamic_img_size=True).eval()
    weights = load_file(snapshot / "model.safetensors")
    encoder = dpt.encoder.model.state_dict()
    assert encoder.keys() == weights.keys() and all(torch.equal(encoder[k], weights[k]) for k in weights)
    assert dpt(torch.randn(2, 3, 32, 64)).shape == (2, 3, 32, 64)  # not the 32x32 it was trained at


def test_revisions_and_the_local_folder_backend(export, fake_hub, hf_cache, cli, tmp_path, monkeypatch):
    assert cli("push", export, "--repo-id", "org/tiny@v1", "--token", TOKEN).exit_code == 0  # pull's syntax
    assert fake_hub[1] == ("create_branch", "org/tiny", {"branch": "v1", "exist_ok": True})
    assert (hf_cache / "models--org--tiny" / "refs" / "v1").is_file()
    result = cli("pull", "org/tiny@v1")
    assert result.exit_code == 0, result.output
    # the printed timm line names the revision, and works offline as printed
    snippet = 'timm.create_model("hf-hub:org/tiny@v1", pretrained=True)'
    assert snippet in " ".join(result.output.split())
    import timm

    assert same_encoder(eval(snippet, {"timm": timm}), export)

    shared = tmp_path / "shared"
    result = cli("push", export, "--repo-id", "lab/tiny", "--backend-dir", shared)
    assert result.exit_code == 0, result.output
    assert (shared / "models--lab--tiny" / "refs" / "main").is_file()
    monkeypatch.setitem(ZOO, "lab-tiny", ZooEntry("lab-tiny", "mae", "vit_tiny_patch4_32", "pack", 1, "lab/tiny", "t"))
    assert zoo_row(cli("list")) == ["lab-tiny", "hf-hub:lab/tiny", "(not cached)"]
    result = cli("pull", "lab-tiny", "--backend-dir", shared)
    assert result.exit_code == 0, result.output
    assert (hf_cache / "models--lab--tiny" / "snapshots").is_dir()
    assert zoo_row(cli("list")) == ["lab-tiny", "hf-hub:lab/tiny", "(cached)"]
    assert "lab/nothing is not in" in error_line(cli("pull", "lab/nothing", "--backend-dir", shared))
    refs = shared / "models--lab--tiny" / "refs" / "main"
    assert "is a file, not a folder" in error_line(cli("pull", "lab/tiny", "--backend-dir", refs))
    assert "does not exist" in error_line(cli("pull", "lab/tiny", "--backend-dir", tmp_path / "nowhere"))


def test_clear_errors(export, fake_hub, cli, tmp_path):
    line = error_line(cli("push", export, "--repo-id", "org/tiny"))
    assert line == "error: pushing to the Hub needs a token: pass --token, set HF_TOKEN or run `hf auth login`"
    assert "org/unknown is not in the local Hugging Face cache" in error_line(cli("pull", "org/unknown"))
    assert "HF_HUB_OFFLINE is set" in error_line(cli("pull", "org/unknown"))
    (tmp_path / "plain").mkdir()
    assert "is not an export: it has no config.json or model.safetensors" in error_line(
        cli("push", tmp_path / "plain", "--repo-id", "org/tiny", "--token", TOKEN))
    assert fake_hub == []  # nothing was sent


def test_a_failing_push_never_shows_the_token(export, fake_hub, cli, monkeypatch):
    def rejected(self, **kwargs):  # a server that echoes what it was sent
        response = httpx.Response(401, request=httpx.Request("POST", "https://huggingface.co/api/models/org/tiny"))
        raise HfHubHTTPError(f"401 Unauthorized: invalid token {TOKEN}", response=response)

    monkeypatch.setattr(HfApi, "upload_folder", rejected)
    line = error_line(cli("push", export, "--repo-id", "org/tiny", "--token", TOKEN))
    assert line.startswith("error: push to org/tiny failed: 401 Unauthorized") and TOKEN not in line


CRASHING_PUSH = """
import sys
from huggingface_hub import HfApi
HfApi.create_repo = lambda self, repo_id, **kwargs: "https://huggingface.co/" + repo_id
HfApi.repo_exists = lambda self, repo_id, **kwargs: False
def crash(self, **kwargs):
    raise RuntimeError("connection reset")
HfApi.upload_folder = crash
from mimzoo_cli.app import app
app(["push", sys.argv[1], "--repo-id", "org/tiny", "--token", sys.argv[2]], prog_name="mimzoo")
"""


def test_an_unexpected_crash_during_push_prints_no_token(export):
    # Typer's own traceback (not CliRunner's): it must not show local variables such as the token
    result = run_python(CRASHING_PUSH, str(export), TOKEN)
    assert result.returncode != 0 and "connection reset" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_revisions_and_repo_ids_never_lead_outside_the_destination(export, hf_cache, cli, tmp_path):
    from mimzoo.errors import MimzooError
    from mimzoo.hub import locate_backbone

    shared = tmp_path / "a" / "b" / "shared"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    before = tree(tmp_path)
    for bad, why in [("../../../x", "it holds '..'"), (str(victim), "it starts with '/'"), ("-x", "starts with '-'"),
                     ("v1.lock", "ends with '.lock'"), ("a\\b", "one of ~ ^ : ? * [ \\"), ("x@{1}", "'@{'"),
                     ("a//b", "'//'"), (".git", "starts with '.'"), ("", "it is empty")]:
        line = error_line(cli("push", export, "--repo-id", f"lab/tiny@{bad}", "--backend-dir", shared))
        assert line.startswith(f"error: {bad!r} is not a valid revision (") and why in line, line
    for bad in ["../../../x", "/abs"]:
        line = error_line(cli("pull", f"lab/tiny@{bad}", "--backend-dir", shared))
        assert line.startswith(f"error: {bad!r} is not a valid revision"), line
        with pytest.raises(MimzooError, match="is not a valid revision"):
            locate_backbone(f"hf-hub:lab/tiny@{bad}")
    assert "error: '../x' is not a Hub repo id: use ORG/NAME" in error_line(
        cli("push", export, "--repo-id", "../x", "--backend-dir", shared))
    assert tree(tmp_path) == before and victim.read_text() == "keep me"

    # valid names with a slash still work, and land inside the folder
    assert cli("push", export, "--repo-id", "lab/tiny@team/v1", "--backend-dir", shared).exit_code == 0
    assert (shared / "models--lab--tiny" / "refs" / "team" / "v1").is_file()
    assert cli("pull", "lab/tiny@team/v1", "--backend-dir", shared).exit_code == 0
    assert (hf_cache / "models--lab--tiny" / "refs" / "team" / "v1").is_file()


def test_the_local_backend_writes_only_inside_its_folder(export, tmp_path):
    from mimzoo.errors import MimzooError

    shared = tmp_path / "shared"
    (shared / "models--lab--tiny").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (shared / "models--lab--tiny" / "refs").symlink_to(tmp_path / "elsewhere")  # planted in a shared folder
    with pytest.raises(MimzooError, match=r"refs/main is outside .*shared: mimzoo writes only inside"):
        write_snapshot(shared, "lab/tiny", "main", export)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with pytest.raises(MimzooError, match="is not a snapshot id"):
        write_snapshot(shared, "lab/other", "main", export, commit="a/b")
    write_snapshot(shared, "lab/refs", "v1/rc", export)
    for clashing, other in (("v1", "v1/rc"), ("v1/rc/2", "v1/rc")):  # as git: no branch is a folder of branches
        with pytest.raises(MimzooError, match=f"revision '{clashing}' clashes with the revision '{other}'"):
            write_snapshot(shared, "lab/refs", clashing, export, commit="other")
    assert len(list((shared / "models--lab--refs" / "snapshots").iterdir())) == 1  # no snapshot "other" written


def test_visibility_is_the_owners_unless_asked_and_asked_also_on_an_existing_repo(export, fake_hub, cli):
    assert cli("push", export, "--repo-id", "org/tiny", "--token", TOKEN).exit_code == 0
    assert fake_hub[0] == ("create_repo", "org/tiny", {"private": None, "exist_ok": True})  # the library default
    fake_hub.clear()
    assert cli("push", export, "--repo-id", "org/tiny", "--private", "--token", TOKEN).exit_code == 0
    assert [c[0] for c in fake_hub] == ["create_repo", "update_repo_settings", "upload_folder"]
    assert fake_hub[1] == ("update_repo_settings", "org/tiny", {"private": True})
    fake_hub.clear()
    assert cli("push", export, "--repo-id", "org/tiny", "--public", "--token", TOKEN).exit_code == 0
    assert fake_hub[1] == ("update_repo_settings", "org/tiny", {"private": False})
    line = error_line(cli("push", export, "--repo-id", "tiny", "--token", TOKEN))
    assert line == "error: give the repo as ORG/NAME (your user or organisation name, then the repo), not 'tiny'"


def test_the_folder_records_its_repo_only_after_a_successful_push(export, fake_hub, hf_cache, cli, monkeypatch):
    import json

    before = {p.name: p.read_bytes() for p in export.iterdir()}

    def rejected(self, **kwargs):
        raise HfHubHTTPError("403 Forbidden", response=httpx.Response(
            403, request=httpx.Request("POST", "https://huggingface.co/api/models/org/tiny")))

    upload = HfApi.upload_folder
    monkeypatch.setattr(HfApi, "upload_folder", rejected)
    assert "push to org/tiny failed: 403 Forbidden" in error_line(cli("push", export, "--repo-id", "org/tiny",
                                                                      "--token", TOKEN))
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before
    monkeypatch.setattr(HfApi, "upload_folder", upload)
    assert cli("push", export, "--repo-id", "org/tiny", "--token", TOKEN).exit_code == 0
    assert json.loads((export / "mimzoo.json").read_text())["repo_id"] == "org/tiny"
    assert 'hf-hub:org/tiny"' in (export / "README.md").read_text()


def test_pull_fetches_only_the_files_of_an_export_and_visualize_reads_it(export, fake_hub, hf_cache, cli, tmp_path,
                                                                         monkeypatch):
    import mimzoo.hub.backends as backends

    assert cli("push", export, "--repo-id", "org/tiny", "--token", TOKEN).exit_code == 0
    seen = {}
    real = backends.snapshot_download

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "snapshot_download", recording)
    assert cli("pull", "org/tiny").exit_code == 0
    assert sorted(seen["allow_patterns"]) == sorted(["config.json", "model.safetensors", "README.md", "mimzoo.json",
                                                     "pretrainer.safetensors"])
    photo = next((REPO / "mimzoo" / "data" / "demo_photos").glob("*.jpg"))
    result = cli("visualize", "hf-hub:org/tiny", "--images", photo, "--out", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "grid.png").is_file()


def test_push_sends_only_the_export_and_a_cache_snapshot_is_never_written(export, fake_hub, hf_cache, cli,
                                                                          image_folder, tmp_path, monkeypatch):
    (export / "notes.txt").write_text("mine, not for the Hub")
    assert cli("push", export, "--repo-id", "org/tiny", "--token", TOKEN).exit_code == 0
    (snapshot,) = (hf_cache / "models--org--tiny" / "snapshots").iterdir()
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(
        ["config.json", "model.safetensors", "README.md", "mimzoo.json", "pretrainer.safetensors"])
    before = {p.name: p.read_bytes() for p in snapshot.iterdir()}
    monkeypatch.chdir(tmp_path)
    result = cli("knn", snapshot, "--data", image_folder, "--val-fraction", "0.25", "--limit", "10", "--workers", "0",
                 "--out", tmp_path / "knn")
    assert result.exit_code == 0, result.output
    assert "recorded" not in result.output
    assert cli("push", snapshot, "--repo-id", "org/copy", "--token", TOKEN).exit_code == 0
    photo = next((REPO / "mimzoo" / "data" / "demo_photos").glob("*.jpg"))
    result = cli("visualize", snapshot, "--images", photo)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models--org--tiny-reconstructions.png").is_file()  # in the current folder, not the cache
    assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == before
    assert sorted(p.name for p in snapshot.parent.iterdir()) == [snapshot.name]
