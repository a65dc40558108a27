"""Evaluation: metrics, the MMEB-V2 / UVRB runners and reports."""

TCOT_MODES = ("none", "query", "target", "both")  # the side(s) whose items get T-CoTs


def mode_covers(mode: str, side: str) -> bool:
    """Whether T-CoT mode `mode` gives the items on `side` ("query" or "target") T-CoTs."""
    return mode in ("both", side)


def unknown_modes(mode_by_set: dict[str, str] | None) -> dict[str, str]:
    """The entries of a per-set T-CoT mode mapping whose mode is not one of TCOT_MODES."""
    return {name: mode for name, mode in (mode_by_set or {}).items() if mode not in TCOT_MODES}
