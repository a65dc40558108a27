"""EG-RL: GRPO on the Reasoner with a frozen Embedder's retrieval as reward (see trainer.py)."""
