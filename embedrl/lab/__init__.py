"""The lab: the offline world embedrl is tested and demonstrated on. The synthetic benchmark
(synth/), the tiny presets, the warm-up and discriminator SFT a from-scratch tiny model needs,
the quickstart, the ablation and its diagnostics. It imports the library; the library never
imports it."""
