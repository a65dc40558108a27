"""What EG-RL rolls out and scores against: both sides of every pair as GRPO prompts, and the
candidate bank (what rollouts are ranked against, embedded once each and kept)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, Pair
from embedrl.core.tcot import TCoT, mode_covers, parse_tcot
from embedrl.models.base import Embedder
from embedrl.models.prompts import DEFAULT_PROMPT_SET, ROLES, build_messages, modality_of

CANDIDATE_TCOTS = ("annotation", "reasoner", "none")


def writes_tcot(pair: Pair, side: str, item: Item, modalities: Sequence[str] | None = None,
                mode_by_set: dict[str, str] | None = None) -> bool:
    """Whether the reasoner writes a T-CoT for `item` on `side` ("query" or "target") of `pair`, as
    evaluation will: its modality is among `modalities` and its dataset's T-CoT mode covers the side."""
    return ((modalities is None or modality_of(item) in modalities)
            and mode_covers((mode_by_set or {}).get(pair.dataset, "both"), side))


class RolloutDataset:
    """Both sides of every pair as GRPO prompts, built lazily: `prompt` (chat), `images`, `pair_index`, `role`.

    `hf` is the `datasets.Dataset` TRL trains on; prompts and images are made on access
    (`with_transform`), so no pixels are copied into Arrow.
    """

    def __init__(self, pairs: Sequence[Pair], modalities: Sequence[str] | None = None,
                 mode_by_set: dict[str, str] | None = None, prompt_set: str = DEFAULT_PROMPT_SET):
        from datasets import Dataset

        self.pairs = list(pairs)
        self.prompt_set = prompt_set
        unknown = sorted(set(mode_by_set or {}) - {p.dataset for p in self.pairs})
        if unknown:  # a typo would otherwise leave the dataset rolled out on both sides
            raise EmbedrlError(f"tcot_mode_by_set names {unknown}, which the training pairs do not hold "
                               f"(their datasets: {', '.join(sorted({p.dataset for p in self.pairs}))})")
        rows = [(i, role) for i, pair in enumerate(self.pairs) for role in ROLES
                if writes_tcot(pair, role, self.item(i, role), modalities, mode_by_set)]
        if not rows:
            raise EmbedrlError(f"no query or target of the training pairs is left to roll out (modalities "
                               f"{list(modalities or ['all'])}, T-CoT modes by dataset {mode_by_set or {}})")
        self.hf = Dataset.from_dict({"pair_index": [i for i, _ in rows], "role": [r for _, r in rows]})
        self.hf = self.hf.with_transform(self._expand)

    def item(self, i: int, role: str) -> Item:
        return self.pairs[i].query if role == "query" else self.pairs[i].pos

    def _expand(self, batch: dict[str, list]) -> dict[str, list]:
        built = [build_messages(self.item(i, r), r, prompt_set=self.prompt_set) for i, r in zip(batch["pair_index"], batch["role"])]
        return {**batch, "prompt": [m for m, _ in built], "images": [imgs for _, imgs in built]}


class CandidateBank:
    """Embeddings of what rollouts are scored against, computed once each and kept.

    Keys: ("query", i) and ("target", i), ("neg", i, j) for the pair's j-th hard negative. Each is
    embedded with a T-CoT from `tcots`: "annotation" (the pairs file's), "reasoner" (written once by
    `reasoner`, e.g. the starting policy: what an index built with it would hold, so rollouts are
    scored against candidates as retrieval will see them) or "none" (the raw item). Items outside
    `modalities`, and sides their dataset's `mode_by_set` entry leaves out, stay raw, as evaluation leaves them.
    """

    def __init__(self, embedder: Embedder, pairs: Sequence[Pair], tcots: str = "annotation", batch_size: int = 32,
                 modalities: Sequence[str] | None = None, reasoner=None, mode_by_set: dict[str, str] | None = None):
        if tcots not in CANDIDATE_TCOTS:
            raise EmbedrlError(f"candidate T-CoTs must be one of {list(CANDIDATE_TCOTS)}, not {tcots!r}")
        if tcots == "reasoner" and reasoner is None:
            raise EmbedrlError("candidate T-CoTs from a reasoner need the reasoner")
        self.embedder, self.pairs, self.tcots, self.reasoner = embedder, pairs, tcots, reasoner
        self.modalities, self.mode_by_set = modalities, mode_by_set
        self.batch_size = batch_size
        self.vectors: dict[tuple, torch.Tensor] = {}
        self.written: dict[tuple, TCoT | None] = {}
        self.hashes: dict[tuple, str] = {}

    def item(self, key: tuple) -> Item:
        pair = self.pairs[key[1]]
        return pair.negs[key[2]] if key[0] == "neg" else pair.query if key[0] == "query" else pair.pos

    def content(self, key: tuple) -> str:
        """The content hash of the item behind `key`: two pairs may share a target (a class label, an answer)."""
        if key not in self.hashes:
            self.hashes[key] = self.item(key).content_hash()
        return self.hashes[key]

    def annotation(self, role: str, i: int, j: int = 0) -> TCoT | None:
        """The annotated T-CoT of pair i's query, target, or j-th hard negative (role "neg")."""
        pair = self.pairs[i]
        text = pair.neg_tcot(j) if role == "neg" else pair.qry_tcot if role == "query" else pair.pos_tcot
        return parse_tcot(text) if text else None

    def has_tcot(self, key: tuple) -> bool:
        """Whether the item behind `key` is embedded with a T-CoT (a hard negative is a target)."""
        side = "query" if key[0] == "query" else "target"
        return self.tcots != "none" and writes_tcot(self.pairs[key[1]], side, self.item(key), self.modalities,
                                                    self.mode_by_set)

    def entries(self, keys: Sequence[tuple]) -> list[tuple[Item, TCoT | None]]:
        """The items behind keys and the T-CoTs they are embedded with (None: read raw)."""
        covered = {key: self.has_tcot(key) for key in keys}
        if self.tcots == "reasoner":  # written only for the items that will carry them
            missing = [k for k, has in covered.items() if has and k not in self.written]
            for role in ROLES:
                batch = [k for k in missing if (k[0] == "query") == (role == "query")]
                if batch:
                    written = self.reasoner.generate([self.item(k) for k in batch], role=role, show_progress=False)
                    self.written.update(zip(batch, written))
        tcot = self.written.__getitem__ if self.tcots == "reasoner" else lambda key: self.annotation(*key)
        return [(self.item(key), tcot(key) if covered[key] else None) for key in keys]

    def entry(self, key: tuple) -> tuple[Item, TCoT | None]:
        return self.entries([key])[0]

    def get(self, keys: Sequence[tuple]) -> torch.Tensor:
        missing = [k for k in dict.fromkeys(keys) if k not in self.vectors]
        if missing:
            items, tcots = zip(*self.entries(missing))
            vectors = self.embedder.encode(list(items), list(tcots), batch_size=self.batch_size)
            self.vectors.update(zip(missing, vectors))
        if not keys:
            return torch.empty(0, self.embedder.dim)
        return torch.stack([self.vectors[k] for k in keys])
