"""Data: readers of dataset layouts into Items: training pairs (pairs.py), evaluation sets
(readers.py, evalset.py), corpora to index (corpus.py), and the dataset registry schema."""
