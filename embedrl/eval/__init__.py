"""Evaluation: metrics, the MMEB-V2 / UVRB runners and reports."""
