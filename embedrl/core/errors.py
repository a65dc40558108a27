"""The one exception type for problems a user can fix (bad input, missing files, mismatches).

The CLI prints an `EmbedrlError` as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class EmbedrlError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it."""


def entry(table, name, what: str):
    """`table[name]`, or an EmbedrlError naming the unknown `what` and listing the known ones."""
    if name not in table:
        raise EmbedrlError(f"unknown {what} {name!r}; known {what}s: {', '.join(table)}")
    return table[name]
