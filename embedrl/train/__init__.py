"""Training: contrastive Embedder training, Reasoner SFT and EG-RL (GRPO)."""
