"""The synthetic benchmark: rendered scenes (scenes.py), captions (text.py), MMEB-V2-style
tasks with a generic annotator (tasks.py), written to disk by benchmark.py."""
