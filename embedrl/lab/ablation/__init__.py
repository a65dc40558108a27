"""The Embed-RL ablation on the synthetic benchmark (run.py): raw vs SFT vs EG-RL over seeds."""
