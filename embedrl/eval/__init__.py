"""Evaluation: metrics, the MMEB-V2 / UVRB runners and reports."""

TCOT_MODES = ("none", "query", "target", "both")  # the side(s) whose items get T-CoTs


def mode_covers(mode: str, side: str) -> bool:
    """Whether T-CoT mode `mode` gives the items on `side` ("query" or "target") T-CoTs."""
    return mode in ("both", side)
