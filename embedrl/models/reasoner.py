"""The Reasoner: any Hugging Face image-text-to-text model that writes T-CoTs for items.

    reasoner = load_reasoner("runs/presets/tiny-reasoner")        # or a Hub id, or a LoRA adapter dir
    tcots = reasoner.generate(items, role="target")               # one parsed TCoT per item
    samples = reasoner.generate(items, role="query", num_samples=4, temperature=1.0)  # list of lists

Prompts come from `embedrl.models.prompts` (per modality and role); SFT builds its input with
the same `build_messages`, so training and generation see identical prompts. Generation is
batched with left padding; items are grouped by modality and length first to waste less
padding, and results come back in input order. Parsing never raises: a broken generation
is a `TCoT` with `valid=False`; each returned TCoT also carries the raw text in `.raw`.

Prompt sets (`embedrl.models.prompts.PROMPT_SETS`): `default` (the tiny presets' short prompts)
or `embed-rl` (the paper's); `prompt_set=` when loading, else the one `embedrl_reasoner.json`
records, else `default`. Saving records it, so SFT, EG-RL and generation keep one set.

T-CoT cache: `cache_key` is (reasoner id, weights hash, prompt set version), what
`embedrl.core.tcot_cache.TCoTCache` keys on. With `cache=` set (a `TCoTCache`, a path, or True
for the default location), greedy single-sample `generate` calls read and fill that cache,
so a target is reasoned about once and reused by training, indexing and evaluation. Sampled
calls (num_samples > 1, do_sample, or other per-call settings) always generate.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir, read_json, write_json
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, parse_tcot
from embedrl.models.prompts import (
    DEFAULT_PROMPT_SET,
    MODALITIES,
    ROLES,
    build_messages,
    get_prompt_set,
    modality_of,
)

logger = logging.getLogger(__name__)

REASONER_CONFIG = "embedrl_reasoner.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_WEIGHT_FILES = ("config.json", "adapter_config.json")


def _file_sha1(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def directory_weights_hash(path: str | os.PathLike) -> str:
    """Digest of a model directory's weights and configs (content, not names or times)."""
    path = Path(path)
    h = hashlib.sha1()
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in _WEIGHT_FILES))
    for p in files:
        h.update(p.name.encode())
        _file_sha1(p, h)
    return h.hexdigest()[:16]


def module_weights_hash(model) -> str:
    """Digest of a model's parameters and buffers in memory (exact bytes)."""
    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _hub_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id that is not a repo name, an old hub client: no commit
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def model_identity(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """(spec, weights hash) of a reasoner: a directory by its absolute path (one id however it was
    spelled) and the hash of its files; a Hub id by its cached commit (None when not cached)."""
    spec = str(name_or_path)
    path = Path(spec)
    if path.is_dir():
        return str(path.resolve()), directory_weights_hash(path)
    if path.exists() or spec.startswith((".", "/")):
        raise EmbedrlError(f"reasoner {spec!r} is not a model directory")
    return spec, _hub_commit(spec)


def open_cache(cache):
    if cache is None or cache is False:
        return None
    from embedrl.core.tcot_cache import TCoTCache

    if isinstance(cache, TCoTCache):
        return cache
    return TCoTCache(None if cache is True else cache)


class Reasoner:
    """Wraps an image-text-to-text model and its processor; writes T-CoTs for items."""

    def __init__(self, model, processor, name_or_path: str = "", device: str | torch.device | None = None,
                 weights_hash: str | None = None, cache=None, max_new_tokens: int = 128,
                 batch_size: int = 32, modalities: Sequence[str] | None = None,
                 prompt_set: str = DEFAULT_PROMPT_SET):
        self.model = model
        self.prompt_set = get_prompt_set(prompt_set)
        self.modalities = check_modalities(modalities)
        self.processor = processor
        self.name_or_path = name_or_path or type(model).__name__
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size  # items per generate call
        self.cache = open_cache(cache)
        self.generated_items = 0  # items actually generated for (cache misses included), for bookkeeping
        self._weights_hash = weights_hash
        if processor.tokenizer.pad_token is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(device)
        self.model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def weights_hash(self) -> str:
        """Digest of the weights: of the loaded files, the Hub commit, or the parameters in memory."""
        if self._weights_hash is None:
            self._weights_hash = module_weights_hash(self.model)
        return self._weights_hash

    @property
    def cache_key(self) -> tuple[str, str, str]:
        """(reasoner id, weights hash, prompt set version): what the T-CoT cache keys on."""
        return (self.name_or_path, self.weights_hash, self.prompt_set.version)

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | None = None,
                        dtype: torch.dtype | str | None = None, cache=None,
                        processor_kwargs: dict[str, Any] | None = None, prompt_set: str | None = None,
                        **kwargs: Any) -> Reasoner:
        """Load from a Hub id, a model directory, or a PEFT LoRA adapter directory.

        `processor_kwargs` go to `AutoProcessor.from_pretrained` (e.g. `{"max_pixels": 401408}`
        to cap the vision tokens per image of a Qwen2-VL-class model).
        """
        from embedrl.models.hf import load_vlm

        check_modalities(kwargs.get("modalities"))  # a bad value fails before the weights load
        spec, weights_hash = model_identity(name_or_path)
        model, processor = load_vlm(spec, dtype, processor_kwargs, what="reasoner")
        return cls(model, processor, name_or_path=spec, device=device, weights_hash=weights_hash,
                   cache=cache, prompt_set=prompt_set or recorded_prompt_set(spec), **kwargs)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def save_pretrained(self, path: str | os.PathLike, merge_lora: bool = False) -> Path:
        """HF layout (or PEFT adapters, unless `merge_lora`) plus the processor; loadable by path."""
        path = ensure_dir(path)
        model = self.model.merge_and_unload() if self.is_lora and merge_lora else self.model
        model.save_pretrained(str(path))
        self.processor.save_pretrained(str(path))
        write_json(path / REASONER_CONFIG, {"prompt_set": self.prompt_set.name,
                                            "prompt_version": self.prompt_set.version, "source": self.name_or_path})
        return path

    # -- generation ----------------------------------------------------------------------------

    def collate(self, items: Sequence[Item], role: str) -> dict[str, Any]:
        """Left-padded model inputs for `items` in `role` (the prompt only, ready to generate)."""
        return self.collate_chats([build_messages(item, role, prompt_set=self.prompt_set) for item in items])

    def collate_chats(self, chats: Sequence[tuple[list[dict[str, Any]], list]]) -> dict[str, Any]:
        """Left-padded model inputs for chats: (messages with image placeholders, their images in order)."""
        texts, images = [], []
        for messages, chat_images in chats:
            texts.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            images.extend(chat_images)
        batch = self.processor(text=texts, images=images or None, padding=True, padding_side="left",
                               return_tensors="pt")
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def complete(self, chats: Sequence[tuple[list[dict[str, Any]], list]], num_samples: int = 1,
                 max_new_tokens: int | None = None, **sampling: Any) -> list[list[str]]:
        """The model's replies to chats (as `collate_chats` takes them) in one generate call, `num_samples` each.

        `sampling` goes to `model.generate`; num_samples > 1 samples unless told otherwise. `embedrl serve`
        answers chat requests with this, so a remote reasoner writes what this one would.
        """
        if num_samples > 1:
            sampling.setdefault("do_sample", True)
        tokenizer = self.processor.tokenizer
        gen_kwargs = {"max_new_tokens": max_new_tokens or self.max_new_tokens, "num_return_sequences": num_samples,
                      "pad_token_id": tokenizer.pad_token_id, **sampling}
        if not gen_kwargs.get("do_sample"):
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        batch = self.collate_chats(chats)
        with torch.inference_mode():
            generated = self.model.generate(**batch, **gen_kwargs)
        decoded = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [[d.strip() for d in decoded[j * num_samples:(j + 1) * num_samples]] for j in range(len(chats))]

    def generate(self, items: Sequence[Item], role: str = "query", num_samples: int = 1, batch_size: int | None = None,
                 max_new_tokens: int | None = None, show_progress: bool | None = None, use_tcot_cache: bool = True,
                 **sampling: Any) -> list[TCoT | None] | list[list[TCoT | None]]:
        """T-CoTs for `items` in `role` ("query" or "target"); one per item, or `num_samples` each.

        With `modalities` set, items of other modalities get None instead (no generation).

        `sampling` goes to `model.generate` (do_sample, temperature, top_p, top_k, ...);
        num_samples > 1 samples (do_sample=True) unless told otherwise.
        """
        if role not in ROLES:
            raise EmbedrlError(f"role must be one of {ROLES}, not {role!r}")
        if num_samples < 1:
            raise EmbedrlError(f"num_samples must be at least 1, not {num_samples}")
        items = list(items)
        if not items:
            return []
        if self.modalities is not None and any(modality_of(i) not in self.modalities for i in items):
            # items of other modalities get no T-CoT (None): embedders then read them raw
            keep = [k for k, item in enumerate(items) if modality_of(item) in self.modalities]
            got = self.generate([items[k] for k in keep], role, num_samples, batch_size, max_new_tokens,
                                show_progress, use_tcot_cache, **sampling) if keep else []
            out: list = [None if num_samples == 1 else [None] * num_samples for _ in items]
            for k, tcot in zip(keep, got):
                out[k] = tcot
            return out
        cacheable = (num_samples == 1 and not sampling.get("do_sample")
                     and not (set(sampling) - {"do_sample"})
                     and max_new_tokens in (None, self.max_new_tokens))
        if use_tcot_cache and self.cache is not None and cacheable:
            return self.cache.get_or_generate(items, role, self, use_tcot_cache=False, batch_size=batch_size,
                                              show_progress=show_progress)
        texts = self.generate_text(items, role, num_samples, batch_size, max_new_tokens, show_progress, **sampling)
        out = [[_parsed(t) for t in per_item] for per_item in texts]
        return [o[0] for o in out] if num_samples == 1 else out

    def generate_text(self, items: Sequence[Item], role: str = "query", num_samples: int = 1, batch_size: int | None = None,
                      max_new_tokens: int | None = None, show_progress: bool | None = None,
                      **sampling: Any) -> list[list[str]]:
        """The raw generations, `num_samples` per item, in input order."""
        from tqdm.auto import tqdm

        items = list(items)
        batch_size = batch_size or self.batch_size
        # Similar items together: fewer image/no-image mixes and less padding per batch.
        order = sorted(range(len(items)), key=lambda i: (modality_of(items[i]), len(items[i].text)))
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        out: list[list[str]] = [[] for _ in items]
        show = len(batches) > 1 if show_progress is None else show_progress
        for idx in tqdm(batches, desc=f"T-CoT ({role})", unit="batch", disable=not show):
            replies = self.complete([build_messages(items[i], role) for i in idx], num_samples, max_new_tokens,
                                    **sampling)
            for i, texts in zip(idx, replies):
                out[i] = texts
            self.generated_items += len(idx)
        return out


def recorded_prompt_set(spec: str | os.PathLike) -> str:
    """The prompt set a reasoner directory's `embedrl_reasoner.json` records (`default` if none)."""
    saved = Path(spec) / REASONER_CONFIG
    return read_json(saved).get("prompt_set", DEFAULT_PROMPT_SET) if saved.is_file() else DEFAULT_PROMPT_SET


def check_modalities(modalities: Sequence[str] | None) -> tuple[str, ...] | None:
    """The modalities a reasoner writes T-CoTs for (None: all), checked against the prompt set."""
    if modalities is None:
        return None
    modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    bad = sorted(set(modalities) - set(MODALITIES))
    if bad or not modalities:
        raise EmbedrlError(f"T-CoT modalities must be a non-empty subset of {list(MODALITIES)}, not {list(modalities)}")
    return modalities


def _parsed(text: str) -> TCoT:
    tcot = parse_tcot(text)
    tcot.raw = text  # the T-CoT cache stores the raw generation when present
    return tcot


BACKENDS = ("hf", "vllm")


def load_reasoner(spec: str | os.PathLike | Reasoner, backend: str = "hf", **kwargs: Any) -> Reasoner:
    """A Reasoner from a Hub id, a model directory or a LoRA adapter directory (see `Reasoner.from_pretrained`),
    or an OpenAI-compatible chat endpoint, `http(s)://HOST:PORT[/v1][#MODEL]` or `openai:BASE_URL#MODEL`
    (`embedrl.models.remote_reasoner`).

    `backend` (local models): "hf" generates with transformers (CPU or GPU); "vllm" with vLLM's offline
    engine (GPU only; `embedrl.models.vllm_reasoner`): the same prompts, parsing and T-CoT cache keys.
    """
    if isinstance(spec, Reasoner):
        return spec
    if str(spec).startswith(("http://", "https://", "openai:")):
        from embedrl.models.remote_reasoner import RemoteReasoner

        return RemoteReasoner(str(spec), **kwargs)
    if backend not in BACKENDS:
        raise EmbedrlError(f"reasoner backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "vllm":
        from embedrl.models.vllm_reasoner import VLLMReasoner

        return VLLMReasoner.from_pretrained(spec, **kwargs)
    return Reasoner.from_pretrained(spec, **kwargs)
