"""EG-RL's configuration: every `trl.GRPOConfig` field plus the reward weights, pools and
failure rules (`EGRLConfig`), read from a YAML recipe and key=value overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import TCOT_MODES, unknown_modes
from embedrl.train.egrl.flip import FLIP_REFERENCES
from embedrl.train.egrl.rewards import OUTCOME_FAILURES, OUTCOME_FORMS, TARGET_VIEWS, outcome_pool
from embedrl.train.egrl.rollouts import CANDIDATE_TCOTS

PROCESS_REWARDS = ("judge", "flip", "none")


@dataclass
class EGRLConfig(GRPOConfig):
    """Everything `GRPOConfig` has, plus the EG-RL fields below (`beta` stays GRPO's KL weight)."""

    reasoner: str = field(default="", metadata={"help": "Policy to start from: the SFT reasoner (dir or Hub id)."})
    embedder: str = field(default="", metadata={
        "help": "Frozen embedder that scores rollouts: a model dir / spec, or the URL of an `embedrl serve` (its GPU)."})
    embedder_format: str = field(default="", metadata={
        "help": "Embedding format of a VLM embedder (embed-rl, vlm2vec, gme, qwen3-vl-embedding); default: the "
                "one its embedrl.json records or its files identify."})
    train_data: str = field(default="", metadata={"help": "Pairs JSONL (MMEB-train style, with T-CoT annotations)."})
    data_root: str | None = field(default=None, metadata={"help": "Folder media paths are relative to."})
    format_weight: float = field(default=0.05, metadata={"help": "alpha: weight of the format reward."})
    process_weight: float = field(default=0.2, metadata={"help": "beta (paper): weight of the process reward."})
    outcome_weight: float = field(default=0.8, metadata={
        "help": "gamma: weight of the outcome reward. GRPO standardises the total per group, so weights act "
                "through each reward's spread: the run logs weight x std per reward and warns when one drowns "
                "another (a margin at small outcome_tau varies little and needs a larger weight)."})
    outcome_k: int = field(default=1, metadata={"help": "Acc_k: the positive must rank within the top k.", "min": 1})
    outcome_tau: float = field(default=0.5, metadata={"help": "Softmax temperature over negatives' similarities."})
    outcome_form: str = field(default="margin", metadata={
        "help": "`margin`: the paper's Acc_k x (positive - softmax-weighted negatives); `rank`: Acc_k / log2(1 + rank) "
                "of the positive, which only moves when a T-CoT changes the ranking (outcome_tau unused)."})
    outcome_failure: str = field(default="floor", metadata={
        "help": "What a failed rollout (T-CoT unusable, or positive outside the top k) earns: `floor`, the lower of "
                "0 and the worst success among its prompt's rollouts, or `zero`. With the margin at a small "
                "outcome_tau a success below its hardest negative earns less than 0, so `zero` pays for breaking "
                "the format. At "
                "outcome_k=1, or with the rank form, no success earns less than 0 and the two are the same. "
                "`raw`: an unusable T-CoT is scored on the raw item, as retrieval falls back to it, so a well-formed "
                "T-CoT that retrieves worse than raw input earns less than a broken one (the format reward still "
                "pays for form); a positive outside the top k is floored."})
    outcome_negatives: str = field(default="batch", metadata={
        "help": "Which other pairs' items a rollout must beat: those of the step's batch (`batch`), every training "
                "pair's (`all`), every pair of the rollout's own dataset (`dataset`: as a held-out query meets only "
                "its own set's candidates), or N pairs of each dataset drawn once, a rollout meeting its own "
                "dataset's (a number: for training sets too large to embed whole). All but the batch's are embedded "
                "once each, in the candidate bank. Hard negatives are added either way; each distinct item counts "
                "once."})
    target_view: str = field(default="target", metadata={
        "help": "How a target rollout is ranked. `target` (the paper's symmetric reward): it must find its query "
                "among the other queries. `query`: its query must find it among the other targets and the pair's "
                "hard negatives, as retrieval does; only this view meets near-copy targets."})
    process_reward: str = field(default="judge", metadata={
        "help": "Form of the process reward (weight: process_weight). `judge`: the paper's, a discriminator picks the "
                "positive among candidate T-CoTs; `flip`: reference-free, a backward model infers the other side of "
                "the pair (or the item's own text, flip_reference) from the rollout's T-CoT and earns the token F1 "
                "against the real text; `none`: no process reward."})
    discriminator: str | None = field(default=None, metadata={
        "help": "Process-reward discriminator: HF id/path or openai:BASE_URL#MODEL (default: the initial reasoner)."})
    flip_model: str = field(default="frozen", metadata={
        "help": "FLIP's backward model: `frozen` (a copy of the starting reasoner), `policy` (the policy being trained), "
                "or an HF id/path or openai:BASE_URL#MODEL."})
    flip_reference: str = field(default="other", metadata={
        "help": "What FLIP infers: `other` (a target rollout's query, a query rollout's target text) or `own` (the "
                "rolled-out item's own text)."})
    flip_max_new_tokens: int = field(default=48, metadata={"help": "Longest text the backward model writes (tokens)."})
    flip_temperature: float = field(default=0.0, metadata={
        "help": "Backward model's sampling temperature (0: greedy, so equal T-CoTs earn equal rewards; FLIP used 1)."})
    process_candidates: int = field(default=4, metadata={"help": "Candidates shown to the discriminator.", "min": 2})
    candidate_tcots: str = field(default="annotation", metadata={
        "help": "T-CoTs of what rollouts are scored against: `annotation` (the pairs file's), `reasoner` (written "
                "once each by the starting policy, as an index built with it would hold them) or `none` (raw items)."})
    tcot_cache: str | None = field(default=None, metadata={
        "help": "T-CoT cache file for `candidate_tcots: reasoner` (shared with indexing and evaluation)."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs.", "min": 1})
    skip_bad: bool = field(default=False, metadata={"help": "Skip (and count) bad pairs lines."})
    modalities: list[str] | None = field(default=None, metadata={
        "help": "Roll out only items of these modalities (text, image, video, document); items of others are "
                "scored raw, as a reasoner with the same `modalities` leaves them (default: all)."})
    tcot_mode_by_set: dict[str, str] | None = field(default=None, metadata={
        "help": "Training datasets whose sides are read as evaluation's `tcot_mode_by_set` reads them, e.g. "
                "{Synth-Grounding: target}: that dataset's queries are neither rolled out nor given T-CoTs when "
                "scored (embedded raw), its targets are. Datasets not named: both sides (default)."})
    freeze_vision: bool = field(default=False, metadata={
        "help": "Keep the policy's vision tower as it is (train the language side only)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the policy."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank.", "min": 1})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha.", "min": 1})

    def __post_init__(self):
        if self.outcome_form not in OUTCOME_FORMS:
            raise ValueError(f"outcome_form must be one of {list(OUTCOME_FORMS)}, not {self.outcome_form!r}")
        if self.outcome_failure not in OUTCOME_FAILURES:
            raise ValueError(f"outcome_failure must be one of {list(OUTCOME_FAILURES)}, not {self.outcome_failure!r}")
        if self.target_view not in TARGET_VIEWS:
            raise ValueError(f"target_view must be one of {list(TARGET_VIEWS)}, not {self.target_view!r}")
        if self.candidate_tcots not in CANDIDATE_TCOTS:
            raise ValueError(f"candidate_tcots must be one of {list(CANDIDATE_TCOTS)}, not {self.candidate_tcots!r}")
        if self.process_reward not in PROCESS_REWARDS:
            raise ValueError(f"process_reward must be one of {list(PROCESS_REWARDS)}, not {self.process_reward!r}")
        if self.flip_reference not in FLIP_REFERENCES:
            raise ValueError(f"flip_reference must be one of {list(FLIP_REFERENCES)}, not {self.flip_reference!r}")
        bad = unknown_modes(self.tcot_mode_by_set)
        if bad:
            raise ValueError(f"tcot_mode_by_set: modes must be one of {list(TCOT_MODES)}, not {bad}")
        try:
            self.outcome_negatives = str(outcome_pool(self.outcome_negatives))
        except EmbedrlError as err:
            raise ValueError(str(err)) from None
        if self.use_vllm:
            check_vllm(self.vllm_mode)
        weights = self.active_weights()
        if not weights:
            raise ValueError("at least one of format_weight, process_weight, outcome_weight must be non-zero")
        self.reward_weights = [w for _, w in weights]
        super().__post_init__()

    def active_weights(self) -> list[tuple[str, float]]:
        process = self.process_weight if self.process_reward != "none" else 0.0
        return [(n, w) for n, w in (("format", self.format_weight), ("process", process),
                                    ("outcome", self.outcome_weight)) if w]


def check_vllm(mode: str) -> None:
    """`use_vllm` needs vllm and, in colocate mode (TRL's default), a CUDA GPU in this process."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("use_vllm: true needs vllm (pip install 'embedrl[vllm]'); or set use_vllm: false")
    if mode == "colocate" and not torch.cuda.is_available():
        raise ValueError("use_vllm: true with vllm_mode: colocate runs vLLM on this process's GPU, and there is "
                         "none; set use_vllm: false on CPU")


def build_egrl_config(config_path: str | None, overrides: list[str] | None) -> EGRLConfig:
    from embedrl.core.config import build_config

    config = build_config(EGRLConfig, config_path, overrides, report_to="none", logging_steps=5,
                          save_strategy="steps", save_steps=100, bf16=False)
    if not (config.reasoner and config.embedder and config.train_data):
        raise EmbedrlError("set `reasoner`, `embedder` and `train_data` (in the config file or as key=value)")
    return config
