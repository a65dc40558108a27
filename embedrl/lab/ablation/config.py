"""The ablation's variants and configuration (`AblationConfig`: recipes, seeds, variants, scoring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedrl.core.tcot import TCOT_MODES, unknown_modes

VARIANTS = {  # name -> (label in the table, EG-RL overrides; None: no EG-RL)
    "raw": ("(a) raw input", None),
    "sft": ("(b) T-CoT, SFT reasoner", None),
    "eg_rl": ("(c) T-CoT, EG-RL", []),
    "no_process": ("(d) EG-RL without process reward", ["process_weight=0"]),
    "no_outcome": ("(e) EG-RL without outcome reward", ["outcome_weight=0"]),
    # a rollout meets its own dataset's candidates only, as a held-out query does
    "eg_rl_own": ("EG-RL, negatives from the rollout's own dataset", ["outcome_negatives=dataset"]),
    # the retrieval view of the outcome reward: the positive's rank (no Acc_k gate), targets ranked by their query
    "eg_rl_rank": ("EG-RL, rank outcome from the query's side",
                   ["outcome_form=rank", "target_view=query", "outcome_k=1000000"]),
    # the process reward in FLIP form (reference-free): a frozen copy of the SFT reasoner infers the other side
    "eg_rl_flip": ("(f) EG-RL, FLIP process reward", ["process_reward=flip"]),
    # the reward-weight question (the paper's text vs its code); not in the default table
    "paper_text": ("EG-RL, paper-text weights (process 0.8, outcome 0.2)", ["process_weight=0.8", "outcome_weight=0.2"]),
    "paper_code": ("EG-RL, paper-code weights (process 0.2, outcome 0.8)", ["process_weight=0.2", "outcome_weight=0.8"]),
}
DEFAULT_VARIANTS = ["raw", "sft", "eg_rl", "no_process", "no_outcome"]


@dataclass
class AblationConfig:
    out: str = field(default="runs/ablation", metadata={"help": "Output folder (everything resumes from it)."})
    data: str = field(default="runs/synth", metadata={"help": "Synthetic benchmark folder (made if missing)."})
    data_size: str = field(default="small", metadata={"help": "Benchmark size when it has to be made."})
    embedder_recipe: str = field(default="train/embedder_tiny_clip.yaml", metadata={
        "help": "Recipe of the one frozen embedder that scores every variant (trained once)."})
    reasoner_preset: str = field(default="tiny-reasoner", metadata={
        "help": "Preset the reasoner starts from: tiny-reasoner, tiny-reasoner-digits (numbers written digit by "
                "digit, as Qwen2's tokenizer does) or tiny-reasoner-wide (text model twice as wide)."})
    warmup_recipe: str | None = field(default=None, metadata={
        "help": "Perception warm-up recipe for a from-scratch reasoner, run once before the seeds' SFT "
                "(e.g. train/reasoner_warmup_tiny.yaml); none: SFT starts from the preset."})
    discriminator_recipe: str | None = field(default=None, metadata={
        "help": "Recipe teaching the process reward's discriminator (e.g. train/discriminator_tiny.yaml), run "
                "once; none: EG-RL's own default (the SFT reasoner)."})
    sft_recipe: str = field(default="train/reasoner_sft_tiny.yaml", metadata={"help": "T-CoT SFT recipe, run per seed."})
    eg_rl_recipe: str = field(default="train/eg_rl_tiny.yaml", metadata={
        "help": "EG-RL recipe, run per seed and variant from that seed's SFT reasoner."})
    embedder_overrides: list[str] = field(default_factory=list, metadata={
        "help": "key=value overrides of embedder_recipe (e.g. [use_tcot=true]); likewise the four below."})
    warmup_overrides: list[str] = field(default_factory=list)
    discriminator_overrides: list[str] = field(default_factory=list)
    sft_overrides: list[str] = field(default_factory=list)
    eg_rl_overrides: list[str] = field(default_factory=list, metadata={
        "help": "Applied to every EG-RL variant, before the variant's own (e.g. no_outcome's outcome_weight=0)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Training seeds (SFT and EG-RL); the table reports mean +/- std over them."})
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS), metadata={
        "help": f"Rows of the table: {', '.join(DEFAULT_VARIANTS)} (the default), or also the EG-RL variants "
                f"{', '.join(v for v in VARIANTS if v not in DEFAULT_VARIANTS)}."})
    datasets: list[str] | None = field(default=None, metadata={"help": "Score only these held-out sets (None: all)."})
    eval_data: str | None = field(default=None, metadata={
        "help": "Benchmark whose held-out sets score the variants (made if missing, from eval_data_seed and "
                "eval_data_size): a larger, independently drawn one resolves smaller differences. None: `data`'s."})
    eval_data_size: str = field(default="medium", metadata={"help": "Size of eval_data when it has to be made."})
    eval_data_seed: int = field(default=1, metadata={"help": "Seed of eval_data when it has to be made."})
    eval_queries: int | None = field(default=40, metadata={
        "help": "Queries scored per held-out set (None: all of them); the same ones for every variant."})
    tcot_mode: str = field(default="both", metadata={
        "help": "Which side gets T-CoTs in (b)-(e): query, target, both or none."})
    tcot_mode_by_set: dict[str, str] | None = field(default=None, metadata={
        "help": "Held-out sets scored with a T-CoT mode of their own in (b)-(e), e.g. {Synth-Grounding: target}: "
                "its queries embedded raw, its candidates with T-CoTs. Training is unchanged. None: tcot_mode for all."})
    tcot_modalities: list[str] | None = field(default=None, metadata={
        "help": "Item modalities the reasoner writes T-CoTs for in EG-RL and evaluation (e.g. [image, video]); "
                "items of others are embedded raw. SFT still learns from every annotation. None: all."})
    max_new_tokens: int = field(default=128, metadata={  # tiny-reasoner-digits writes longer T-CoTs: its config sets 160
        "help": "Longest T-CoT the reasoner writes in evaluation (tokens)."})
    rerankers: list[str] = field(default_factory=list, metadata={
        "help": "Second stages scored on top of each first stage of `rerank_variants` (lcr, yes-prob), per seed; "
                "none: no reranking rows."})
    rerank_variants: list[str] = field(default_factory=lambda: ["raw", "sft", "eg_rl"], metadata={
        "help": "The first stages (variants of the table) reranked."})
    rerank_model: str = field(default="sft", metadata={
        "help": "The rerankers' model: `sft` (each seed's SFT reasoner), `warmup` (the warmed-up reasoner every seed "
                "shares, so scores are computed once for all seeds) or a model spec / openai:BASE_URL#MODEL."})
    rerank_options: dict[str, list[str]] = field(default_factory=dict, metadata={
        "help": "Each reranker's key=value settings, as --rerank-option, e.g. {lcr: [samples=10, entailment=exact]}."})
    rerank_k: int = field(default=10, metadata={"help": "How many of the first stage's top are reranked."})
    rerank_queries: int | None = field(default=20, metadata={
        "help": "Queries reranked per held-out set (the first ones; the first stage is scored on the same ones)."})
    workers: int = field(default=1, metadata={
        "help": "Seeds run at once, each in its own process with cores/workers threads (at least 1), after the "
                "stages they share. Tiny models leave cores idle between small matrix products, so several one-thread "
                "processes get more done than one process using every core."})

    def __post_init__(self):
        from embedrl.lab.presets import REASONER_PRESETS
        from embedrl.models.reasoner import check_modalities

        if self.reasoner_preset not in REASONER_PRESETS:
            raise ValueError(f"reasoner_preset must be one of {list(REASONER_PRESETS)}, not {self.reasoner_preset!r}")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
        check_modalities(self.tcot_modalities)
        bad = unknown_modes(self.tcot_mode_by_set)
        if self.tcot_mode not in TCOT_MODES or bad:
            raise ValueError(f"T-CoT modes must be one of {TCOT_MODES}: tcot_mode {self.tcot_mode!r}, by set {bad}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        from embedrl.rerank import RERANKERS

        bad = sorted((set(self.rerankers) | set(self.rerank_options)) - set(RERANKERS)) + sorted(
            set(self.rerank_variants) - set(VARIANTS))
        if bad:
            raise ValueError(f"unknown rerankers or rerank_variants {bad}; rerankers: {list(RERANKERS)}, "
                             f"variants: {list(VARIANTS)}")
        if self.rerank_model == "warmup" and self.rerankers and not self.warmup_recipe:
            raise ValueError("rerank_model: warmup needs a warmup_recipe")

    def modalities_override(self) -> list[str]:
        """The `modalities=...` override EG-RL gets (none when T-CoTs cover every modality)."""
        return [f"modalities=[{','.join(self.tcot_modalities)}]"] if self.tcot_modalities else []
