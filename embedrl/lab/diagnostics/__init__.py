"""Diagnostics of the ablation's models on the synthetic benchmark, each runnable as
`python -m embedrl.lab.diagnostics.NAME --help`."""
