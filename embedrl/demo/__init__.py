"""The Gradio retrieval demo."""
