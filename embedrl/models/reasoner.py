"""The Reasoner: any Hugging Face image-text-to-text model that writes T-CoTs for items.

    reasoner = load_reasoner("runs/presets/tiny-reasoner")        # or a Hub id, or a LoRA adapter dir
    tcots = reasoner.generate(items, role="target")               # one parsed TCoT per item
    samples = reasoner.generate(items, role="query", num_samples=4, temperature=1.0)  # list of lists

Prompts come from `embedrl.models.prompts` (per modality and role); SFT builds its input with
the same `build_messages`, so training and generation see identical prompts. Generation is
batched with left padding; items are grouped by modality and length first to waste less
padding, and results come back in input order. Parsing never raises: a broken generation
is a `TCoT` with `valid=False`; each returned TCoT also carries the raw text in `.raw`.

T-CoT cache: `cache_key` is (reasoner id, weights hash, prompt version), what
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
from embedrl.core.io import ensure_dir, write_json
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, parse_tcot
from embedrl.models.prompts import MODALITIES, PROMPT_VERSION, ROLES, build_messages, modality_of

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


def _open_cache(cache):
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
                 batch_size: int = 32, modalities: Sequence[str] | None = None):
        self.model = model
        self.modalities = check_modalities(modalities)
        self.processor = processor
        self.name_or_path = name_or_path or type(model).__name__
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size  # items per generate call
        self.cache = _open_cache(cache)
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
        """(reasoner id, weights hash, prompt version): what the T-CoT cache keys on."""
        return (self.name_or_path, self.weights_hash, PROMPT_VERSION)

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | None = None,
                        dtype: torch.dtype | str | None = None, cache=None,
                        processor_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Reasoner:
        """Load from a Hub id, a model directory, or a PEFT LoRA adapter directory.

        `processor_kwargs` go to `AutoProcessor.from_pretrained` (e.g. `{"max_pixels": 401408}`
        to cap the vision tokens per image of a Qwen2-VL-class model).
        """
        from embedrl.models.hf import load_vlm

        check_modalities(kwargs.get("modalities"))  # a bad value fails before the weights load
        spec = str(name_or_path)
        path = Path(spec)
        is_dir = path.is_dir()
        if is_dir:
            spec = str(path.resolve())  # one id per directory, however it was spelled
        elif path.exists() or spec.startswith((".", "/")):
            raise EmbedrlError(f"reasoner {spec!r} is not a model directory")
        model, processor = load_vlm(spec, dtype, processor_kwargs, what="reasoner")
        weights_hash = directory_weights_hash(path) if is_dir else _hub_commit(spec)
        return cls(model, processor, name_or_path=spec, device=device, weights_hash=weights_hash,
                   cache=cache, **kwargs)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def save_pretrained(self, path: str | os.PathLike, merge_lora: bool = False) -> Path:
        """HF layout (or PEFT adapters, unless `merge_lora`) plus the processor; loadable by path."""
        path = ensure_dir(path)
        model = self.model.merge_and_unload() if self.is_lora and merge_lora else self.model
        model.save_pretrained(str(path))
        self.processor.save_pretrained(str(path))
        write_json(path / REASONER_CONFIG, {"prompt_version": PROMPT_VERSION, "source": self.name_or_path})
        return path

    # -- generation ----------------------------------------------------------------------------

    def collate(self, items: Sequence[Item], role: str) -> dict[str, Any]:
        """Left-padded model inputs for `items` in `role` (the prompt only, ready to generate)."""
        texts, images = [], []
        for item in items:
            messages, item_images = build_messages(item, role)
            texts.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            images.extend(item_images)
        batch = self.processor(text=texts, images=images or None, padding=True, padding_side="left",
                               return_tensors="pt")
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

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
        if num_samples > 1:
            sampling.setdefault("do_sample", True)
        tokenizer = self.processor.tokenizer
        gen_kwargs = {"max_new_tokens": max_new_tokens or self.max_new_tokens, "num_return_sequences": num_samples,
                      "pad_token_id": tokenizer.pad_token_id, **sampling}
        if not gen_kwargs.get("do_sample"):
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # Similar items together: fewer image/no-image mixes and less padding per batch.
        order = sorted(range(len(items)), key=lambda i: (modality_of(items[i]), len(items[i].text)))
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        out: list[list[str]] = [[] for _ in items]
        show = len(batches) > 1 if show_progress is None else show_progress
        for idx in tqdm(batches, desc=f"T-CoT ({role})", unit="batch", disable=not show):
            batch = self.collate([items[i] for i in idx], role)
            with torch.inference_mode():
                generated = self.model.generate(**batch, **gen_kwargs)
            new = generated[:, batch["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = [d.strip() for d in decoded[j * num_samples:(j + 1) * num_samples]]
            self.generated_items += len(idx)
        return out


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


def load_reasoner(spec: str | os.PathLike | Reasoner, **kwargs: Any) -> Reasoner:
    """A Reasoner from a Hub id, a model directory or a LoRA adapter directory (see `Reasoner.from_pretrained`)."""
    if isinstance(spec, Reasoner):
        return spec
    return Reasoner.from_pretrained(spec, **kwargs)
