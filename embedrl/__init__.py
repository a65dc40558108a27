"""embedrl: reasoning-driven multimodal embeddings (Embed-RL), from tiny offline presets to real checkpoints.

Importing the package is cheap: heavy dependencies (torch, transformers, faiss, trl, gradio)
are imported inside the modules and functions that need them.
"""

from embedrl.errors import EmbedrlError

__version__ = "0.1.0"
__all__ = ["EmbedrlError", "__version__"]
