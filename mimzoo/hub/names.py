"""Hub repo ids and revisions, checked once for every command before either becomes part of a path.

A repo id is checked by huggingface_hub's ``validate_repo_id``. huggingface_hub has no check for revisions (it joins
them into cache paths as given: ``refs/REVISION``), so they are held to git's rules for ref names
(``git check-ref-format``), which every branch and tag on the Hub obeys; a commit id obeys them too.
"""

from __future__ import annotations

import re

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from mimzoo.errors import MimzooError

# (what must not occur, why): git check-ref-format's rules, and no leading "-" (git refuses such branch names)
_REF_RULES = [
    (r"[\x00-\x20\x7f~^:?*\[\\]", "it holds a space, a control character or one of ~ ^ : ? * [ \\"),
    (r"\.\.", "it holds '..'"),
    (r"@\{", "it holds '@{'"),
    (r"^/", "it starts with '/'"),
    (r"^-", "it starts with '-'"),
    (r"/$", "it ends with '/'"),
    (r"//", "it holds '//'"),
    (r"(^|/)\.", "a part of it starts with '.'"),
    (r"\.lock(/|$)", "a part of it ends with '.lock'"),
    (r"\.$", "it ends with '.'"),
    (r"^@$", "it is '@'"),
]


def check_revision(revision: str) -> str:
    """``revision`` if it is a valid git ref name (a branch, tag or commit id), else a one-line error naming it."""
    why = "it is empty" if not revision else next((why for rule, why in _REF_RULES if re.search(rule, revision)), None)
    if why:
        raise MimzooError(f"{revision!r} is not a valid revision ({why}); use a branch, tag or commit id such as "
                          "main or v1")
    return revision


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if the Hub accepts it as ORG/NAME (or NAME), else a one-line error naming it."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise MimzooError(f"{repo_id!r} is not a Hub repo id: use ORG/NAME (letters, digits, '-', '_', '.'; "
                          "no '--' or '..')") from None
    return repo_id


def parse_repo(text: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None), both checked."""
    repo_id, at, revision = text.partition("@")
    check_repo_id(repo_id)
    return repo_id, check_revision(revision) if at else None
