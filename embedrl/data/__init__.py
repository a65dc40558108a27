"""Data: the synthetic benchmark, evaluation-set readers (MMEB-V2, UVRB) and collators."""
