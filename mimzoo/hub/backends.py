"""Publishing and fetching exports: the Hugging Face Hub, or a shared folder for air-gapped clusters.

A local backend folder has the Hugging Face cache layout (``models--ORG--NAME/refs/REV`` holding a commit id,
``snapshots/COMMIT/<files>``). So besides ``mimzoo pull --backend-dir``, plain timm reads it directly:
``HF_HUB_CACHE=FOLDER HF_HUB_OFFLINE=1`` and ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)``.

Pulled repos always land in the standard Hugging Face cache (``HF_HUB_CACHE``, default ``$HF_HOME/hub``), where
``hf-hub:`` backbone specs find them offline. The token is passed straight to huggingface_hub and kept out of
every message.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import httpx

import mimzoo
from mimzoo.engine.atomic import atomic_dir, atomic_path
from mimzoo.errors import MimzooError, one_line
from mimzoo.hub.card import update_record, write_record
from mimzoo.hub.layout import (
    CARD,
    CONFIG,
    EXPORT_FILES,
    RECORD,
    WEIGHTS,
    in_hub_cache,
    read_json,
    read_record,
    require_backbone_folder,
)
from mimzoo.hub.names import check_repo_id, check_revision, parse_repo
from mimzoo.hub.resolve import HF_PREFIX, BackboneInfo, cached_snapshot, check_fits, locate_backbone
from mimzoo.zoo import ZOO, ZooEntry

NETWORK_ERRORS = (HfHubHTTPError, OSError, httpx.HTTPError)
PULLED = list(EXPORT_FILES)  # what pull downloads: a timm repo's other files (pytorch_model.bin, ...) are not needed


class Backend(Protocol):
    def check_push(self) -> None:
        """Raise a one-line error if a push cannot start (no credentials, no usable folder)."""

    def push(self, folder: Path, repo_id: str, revision: str | None, private: bool | None) -> str:
        """Upload an export folder; returns where it went. private: None keeps a repo's visibility (a new one gets
        its owner's default), True or False sets it."""

    def pull(self, repo_id: str, revision: str | None) -> Path:
        """Fetch a repo into the Hugging Face cache; returns its snapshot folder."""


@dataclass
class HfHubBackend:
    """The Hugging Face Hub through ``HfApi``; ``token`` defaults to ``HF_TOKEN`` or the stored login."""

    token: str | None = None

    def check_push(self) -> None:
        self._token()

    def push(self, folder: Path, repo_id: str, revision: str | None, private: bool | None) -> str:
        token = self._token()
        api = HfApi(token=token, library_name="mimzoo", library_version=mimzoo.__version__)
        try:
            existed = api.repo_exists(repo_id)
            url = api.create_repo(repo_id, private=private, exist_ok=True)  # exist_ok: its `private` is not applied
            if existed and private is not None:
                api.update_repo_settings(repo_id, private=private)
            if revision:  # the Hub uploads only to a branch that exists
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                              commit_message=f"Upload {folder.name} with mimzoo {mimzoo.__version__}")
        except NETWORK_ERRORS as exc:
            raise MimzooError(_without(token, f"push to {repo_id} failed: {one_line(exc)}")) from None
        return f"{url}/tree/{revision}" if revision else str(url)

    def pull(self, repo_id: str, revision: str | None) -> Path:
        name = f"{repo_id}@{revision}" if revision else repo_id
        try:
            return Path(snapshot_download(repo_id, revision=revision, token=self.token, allow_patterns=PULLED,
                                          library_name="mimzoo", library_version=mimzoo.__version__))
        except LocalEntryNotFoundError:
            why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
            raise MimzooError(f"{name} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                              f"{why}; pull it where the Hub is reachable, or from a shared folder with --backend-dir"
                              ) from None
        except RepositoryNotFoundError:
            raise MimzooError(f"no model repo {repo_id} on the Hub (a private one needs --token or HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise MimzooError(f"{repo_id} has no revision {revision!r}") from None
        except NETWORK_ERRORS as exc:
            raise MimzooError(_without(self.token, f"pulling {name} failed: {one_line(exc)}")) from None

    def _token(self) -> str:
        token = self.token or get_token()
        if not token:
            raise MimzooError("pushing to the Hub needs a token: pass --token, set HF_TOKEN or run `hf auth login`")
        return token


@dataclass
class LocalDirBackend:
    """A folder in the Hugging Face cache layout, e.g. on a cluster's shared file system."""

    root: Path

    def check_push(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise MimzooError(f"--backend-dir {self.root} is a file, not a folder")

    def push(self, folder: Path, repo_id: str, revision: str | None, private: bool | None) -> str:
        return str(write_snapshot(self.root, repo_id, revision or "main", folder))

    def pull(self, repo_id: str, revision: str | None) -> Path:
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise MimzooError(f"--backend-dir {self.root} {what}; name the folder backbones were pushed to")
        try:
            source = Path(snapshot_download(repo_id, revision=revision, cache_dir=self.root, local_files_only=True))
        except LocalEntryNotFoundError:
            name = f"{repo_id}@{revision}" if revision else repo_id
            raise MimzooError(f"{name} is not in {self.root} (push it there with --backend-dir)") from None
        return write_snapshot(Path(constants.HF_HUB_CACHE), repo_id, revision or "main", source, commit=source.name)


def push(folder: Path, repo: str, backend: Backend, private: bool | None = None) -> str:
    """Publish an export folder as ``repo`` (``ORG/NAME[@REVISION]``, the syntax of ``pull`` and ``hf-hub:``;
    revision default main); returns where it went.

    The folder must load strictly; only its export files (``EXPORT_FILES``) go up, never other files a user keeps
    there. A mimzoo export is uploaded with its repo id recorded (so its card shows real ``hf-hub:`` snippets), and
    the folder itself records it only once the upload succeeded (not a Hugging Face cache snapshot, never written).
    """
    folder = Path(folder)
    require_backbone_folder(folder)
    check_fits(read_json(folder / CONFIG), folder / WEIGHTS)
    repo_id, revision = parse_repo(repo)
    if "/" not in repo_id:  # the Hub would file it under the token's user, and the card's snippets would be wrong
        raise MimzooError(f"give the repo as ORG/NAME (your user or organisation name, then the repo), not {repo_id!r}")
    backend.check_push()
    record = read_record(folder) if (folder / RECORD).is_file() else None
    with tempfile.TemporaryDirectory(prefix="mimzoo-push-") as staging:
        staged = Path(staging)
        for name in EXPORT_FILES:  # the export's files only; links: the weights are read in place, not copied
            if (folder / name).is_file() and (record is None or name not in (RECORD, CARD)):
                (staged / name).symlink_to((folder / name).resolve())
        if record is not None:
            write_record(staged, {**record, "repo_id": repo_id})
        where = backend.push(staged, repo_id, revision, private)
    if record is not None and not in_hub_cache(folder):  # a cache snapshot is huggingface_hub's, never changed
        update_record(folder, lambda record: record.update(repo_id=repo_id))
    return where


def pull(name: str, backend: Backend | None = None) -> BackboneInfo:
    """Fetch ``ORG/NAME[@REV]`` or a zoo name into the Hugging Face cache and check that it loads strictly;
    returns what ``hf-hub:ORG/NAME[@REV]`` now resolves to, offline."""
    repo_id, revision = (ZOO[name].repo_id, None) if name in ZOO else parse_repo(name)
    (backend or HfHubBackend()).pull(repo_id, revision)
    info = locate_backbone(f"{HF_PREFIX}{repo_id}@{revision}" if revision else f"{HF_PREFIX}{repo_id}")
    check_fits(info.config, info.weights)
    return info


def zoo_status() -> list[tuple[ZooEntry, Path | None]]:
    """Every zoo entry with its snapshot folder in the Hugging Face cache, or None where it is not cached."""
    return [(entry, cached_snapshot(entry.repo_id)) for entry in ZOO.values()]


def write_snapshot(cache: Path, repo_id: str, ref: str, folder: Path, commit: str | None = None) -> Path:
    """Store the files of ``folder`` as a snapshot of ``repo_id`` in a cache-layout folder and point ``ref`` at it.

    commit: the snapshot id; by default a hash of the files, so pushing the same files twice stores them once.
    Temporaries are built in the repo's folder, beside ``snapshots/``, where ``scan_cache_dir`` does not list them.
    """
    repo_dir = Path(cache) / repo_folder_name(repo_id=check_repo_id(repo_id), repo_type="model")
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    commit = commit or _content_hash(files)
    if "/" in check_revision(commit):
        raise MimzooError(f"{commit!r} is not a snapshot id (a commit id has no '/')")
    snapshot = _inside(cache, repo_dir / "snapshots" / commit)
    ref_file = _ref_file(cache, repo_dir, ref)  # checked before the snapshot is written
    if not snapshot.is_dir():
        with atomic_dir(snapshot, work_dir=repo_dir) as tmp:
            for file in files:
                shutil.copyfile(file, tmp / file.name)
    with atomic_path(ref_file, work_dir=repo_dir) as tmp:
        tmp.write_text(commit)
    return snapshot


def _ref_file(cache: Path, repo_dir: Path, ref: str) -> Path:
    """The file of ``ref`` under ``repo_dir/refs``; a ref whose name another ref's name contains as a folder, or
    the other way round (``v1`` and ``v1/rc``), is refused, as git refuses such branches."""
    refs = repo_dir / "refs"
    path = _inside(cache, refs / check_revision(ref))
    if path.is_dir():
        other = next((p.relative_to(refs).as_posix() for p in path.rglob("*") if p.is_file()), f"{ref}/")
    else:
        other = next((p.relative_to(refs).as_posix() for p in path.parents
                      if p.is_relative_to(refs) and p != refs and p.exists() and not p.is_dir()), None)
    if other is not None:
        raise MimzooError(f"revision {ref!r} clashes with the revision {other!r} already in {cache} (one name cannot "
                          "be both a revision and a folder of revisions, as in git); choose another revision")
    return path


def _inside(root: Path, path: Path) -> Path:
    """``path``, after checking that it (symbolic links followed) lies inside ``root``."""
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise MimzooError(f"{path} is outside {root}: mimzoo writes only inside the folder it was given")
    return path


def _content_hash(files: list[Path]) -> str:
    digest = hashlib.sha1()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _without(secret: str | None, text: str) -> str:
    """``text`` with ``secret`` masked: server messages may echo what they were sent."""
    return text.replace(secret, "***") if secret else text

