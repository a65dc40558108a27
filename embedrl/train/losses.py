"""Contrastive losses as small modules (open_clip / sentence-transformers style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embedrl.core.dist import gather_with_grad


def contrastive_logits(queries: torch.Tensor, targets: torch.Tensor, n_pos: int, scale: torch.Tensor | float,
                       gather: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of this process's queries against the global candidate pool, and the reverse.

    `targets` holds this process's positives (first `n_pos` rows, one per query) followed by
    its hard negatives; `queries` likewise holds the `n_pos` queries followed by query-side
    negatives (candidates only in the target -> query direction). With `gather`, every part of
    every process is gathered with gradient, so each query is scored against the global batch.
    Returns (q2t logits, q2t labels, t2q logits, t2q labels).
    """
    pos, neg = targets[:n_pos], targets[n_pos:]
    qry, qry_neg = queries[:n_pos], queries[n_pos:]
    if gather:
        all_pos, offset = gather_with_grad(pos)
        all_neg, _ = gather_with_grad(neg)
        all_q, _ = gather_with_grad(qry)
        all_q_neg, _ = gather_with_grad(qry_neg)
    else:
        all_pos, all_neg, all_q, all_q_neg, offset = pos, neg, qry, qry_neg, 0
    labels = torch.arange(n_pos, device=queries.device) + offset
    q2t = scale * qry @ torch.cat([all_pos, all_neg]).T
    t2q = scale * pos @ torch.cat([all_q, all_q_neg]).T
    return q2t, labels, t2q, labels


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE over in-batch (and cross-process) negatives plus hard negatives.

    Query -> target: each query against every positive and every hard negative in the global
    batch. Target -> query: each positive against every query (and query-side negative). The
    loss is their mean.

    Args:
        temperature: softmax temperature (0.02 is the usual value for VLM embedders; CLIP
            models trained from scratch prefer a learnable one).
        symmetric: add the target -> query direction.
        gather: use the global batch under `torch.distributed` (no-op in one process).

    The scale (1 / temperature) is passed to `forward`, so a learnable temperature can live
    in the model that the Trainer optimises.
    """

    def __init__(self, symmetric: bool = True, gather: bool = True):
        super().__init__()
        self.symmetric = symmetric
        self.gather = gather
        self.last_num_candidates = 0  # candidates each query was scored against (logged by the trainer)

    def forward(self, queries: torch.Tensor, targets: torch.Tensor, n_pos: int,
                scale: torch.Tensor | float) -> torch.Tensor:
        q2t, q_labels, t2q, t_labels = contrastive_logits(queries, targets, n_pos, scale, self.gather)
        self.last_num_candidates = q2t.shape[1]
        loss = F.cross_entropy(q2t, q_labels)
        if self.symmetric:
            loss = (loss + F.cross_entropy(t2q, t_labels)) / 2
        return loss
