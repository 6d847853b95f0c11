"""The one exception type users see: a single line naming the problem and the fix."""


class MimzooError(Exception):
    """Bad input or state a user can fix. The CLI prints ``error: <message>`` and exits 1."""
