"""Evaluation: metrics, the MMEB-V2 / UVRB runners and reports."""

TCOT_MODES = ("none", "query", "target", "both")  # the side(s) whose items get T-CoTs
