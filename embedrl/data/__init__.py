"""Data: readers of dataset layouts into Items. Evaluation sets: the published MMEB-V2 layouts
(mmeb_image.py, mmeb_video.py, mmeb_visdoc.py over hf.py and media.py), UVRB and embedrl's JSONL
(readers.py, evalset.py); training pairs (pairs.py, MMEB-train: mmeb_train.py); what is on disk
(check.py); T-CoT annotation by a teacher (annotate.py); corpora to index (corpus.py); the dataset
registry schema (registry.py)."""
