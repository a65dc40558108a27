"""The one exception type for problems a user can fix (bad input, missing files, mismatches).

The CLI prints an `EmbedrlError` as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class EmbedrlError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it."""
