"""The core every layer shares: Item / Pair, T-CoT parsing and evidence, the T-CoT cache, atomic
file io, YAML configs, the user-facing error, distributed helpers. Imports nothing of embedrl
above it."""
