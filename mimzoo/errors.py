"""The one exception type users see: a single line naming the problem and the fix."""


class MimzooError(Exception):
    """Bad input or state a user can fix. The CLI prints ``error: <message>`` and exits 1."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A library exception's message as one line (torch, timm and httpx messages span several), cut to ``limit``,
    for quoting inside a MimzooError."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
