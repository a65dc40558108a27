"""Evaluation: metrics, the MMEB-V2 / UVRB runner and reports."""
