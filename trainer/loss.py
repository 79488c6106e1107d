"""InfoNCE / multiple-negatives ranking loss with in-batch, file and memory-bank negatives.

The maths is one pure function of embeddings, `compute_loss_from_embeddings`, checked in the tests against a
float64 oracle (values and gradients). With temperature 0.05, no file negatives, no bank and no mask it
equals sentence-transformers' MultipleNegativesRankingLoss (scale 20, cosine similarity, query_to_doc).

Candidate layout for query i (columns of the logit matrix, in this order):
    [ positives of the batch (B) | file negatives of every row, row-major (B * n) | memory bank (M) ]
Column i is query i's own positive; every other column is a negative unless the mask removes it.

Extra directions (sentence-transformers 6's `directions`, GTE's "improved contrastive loss"):
    doc_to_query:   positive j against every query of the batch (the symmetric loss all-MiniLM-L6-v2 was
                    pre-trained with); query i is no negative of p_j when p_j is a judged positive of i.
    query_to_query: query i against the other queries of the batch (itself and same-text rows excluded).
partition "joint" puts every direction's negatives in one softmax per row; "per_direction" averages
one log-partition per direction (ST's MultipleNegativesSymmetricRankingLoss is doc_to_query, per_direction;
like ST, per_direction is refused with query_to_query, whose softmax never holds the positive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from schemas.train_config import loss_setting_problem


def compute_loss_from_embeddings(
    q: Tensor,
    p: Tensor,
    file_negs: Tensor | None = None,
    memory_bank: Tensor | None = None,
    *,
    temperature: float = 0.05,
    candidate_mask: Tensor | None = None,
    directions: Sequence[str] = ("query_to_doc",),
    partition: str = "joint",
    same_query: Tensor | None = None,
) -> Tensor:
    """Mean InfoNCE loss over the batch.

    q: [B, d] query embeddings; p: [B, d] their positives; file_negs: [B, n, d] or None;
    memory_bank: [M, d] or None (treated as constants: no gradient flows into it);
    candidate_mask: [B, B + B*n + M] bool, True = not a negative for that query (e.g. another judged
    positive of the same query); the own-positive column i is never masked.
    directions: query_to_doc (always) plus optionally doc_to_query and query_to_query (module docstring);
    partition: joint | per_direction; same_query: [B, B] bool, True where rows i and j hold the same
    query (query_to_query never uses those as negatives; the diagonal is always excluded).
    Similarities are cosines; logits are cosine / temperature.
    """
    if q.shape != p.shape or q.dim() != 2:
        raise ValueError(f"q and p must both be [batch, dim], got {tuple(q.shape)} and {tuple(p.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    problem = loss_setting_problem(directions, partition)
    if problem is not None:
        raise ValueError(problem)
    batch, dim = q.shape
    candidates = [p]
    if file_negs is not None and file_negs.numel() > 0:
        if file_negs.dim() != 3 or file_negs.shape[0] != batch or file_negs.shape[2] != dim:
            raise ValueError(f"file_negs must be [{batch}, n, {dim}], got {tuple(file_negs.shape)}")
        candidates.append(file_negs.reshape(-1, dim))  # [B*n, d], row-major
    if memory_bank is not None and memory_bank.numel() > 0:
        candidates.append(memory_bank.detach().to(q.dtype))  # [M, d], no gradient into the queue
    docs = torch.cat(candidates, dim=0)  # [C, d]
    qn = F.normalize(q, dim=-1)
    logits = qn @ F.normalize(docs, dim=-1).T / temperature  # [B, C]
    own = torch.eye(batch, dtype=torch.bool, device=q.device)
    if candidate_mask is not None:
        if candidate_mask.shape != logits.shape:
            raise ValueError(f"candidate_mask must be {tuple(logits.shape)}, got {tuple(candidate_mask.shape)}")
        own_columns = torch.zeros_like(candidate_mask)
        own_columns[:, :batch] = own
        logits = logits.masked_fill(candidate_mask & ~own_columns, float("-inf"))
    positive = logits[:, :batch].diagonal()  # [B] s(q_i, p_i) / T
    blocks = [logits]
    if "doc_to_query" in directions:
        # row j: positive p_j against every query; query i is masked where p_j is one of i's judged positives
        blocks.append(logits[:, :batch].T)
    if "query_to_query" in directions:
        hidden = own if same_query is None else (same_query.to(torch.bool) | own)
        blocks.append((qn @ qn.T / temperature).masked_fill(hidden, float("-inf")))
    if partition == "joint":
        log_z = torch.logsumexp(torch.cat(blocks, dim=1), dim=1)
    else:
        log_z = torch.stack([torch.logsumexp(block, dim=1) for block in blocks]).mean(0)
    return (log_z - positive).mean()


def build_candidate_mask(query_positives: Sequence[frozenset[str]], candidate_ids: Sequence[str]) -> np.ndarray:
    """[B, C] bool: True where candidate c is a judged positive of query i (other than its own column i).

    query_positives[i] holds every judged positive id of row i's query; candidate_ids follow the
    column layout of compute_loss_from_embeddings (batch positives, file negatives, bank).
    """
    mask = np.zeros((len(query_positives), len(candidate_ids)), dtype=bool)
    column_of: dict[str, list[int]] = {}
    for c, doc_id in enumerate(candidate_ids):
        column_of.setdefault(doc_id, []).append(c)
    for i, positives in enumerate(query_positives):
        for doc_id in positives:
            for c in column_of.get(doc_id, ()):
                mask[i, c] = c != i
    return mask


@torch.no_grad()
def tier_margins(q: Tensor, p: Tensor, file_negs: Tensor | None, negative_tiers: Sequence[str]) -> dict[str, float]:
    """Mean cosine margin s(q, own positive) - s(q, own file negative) per tier in this batch.

    negative_tiers: B*n tier names, row-major like file_negs [B, n, d]. Rows whose negatives are padding
    count under their own label ('pad'). Returns {} without file negatives.
    """
    if file_negs is None or file_negs.numel() == 0:
        return {}
    qn, pn, nn = F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(file_negs, dim=-1)
    s_pos = (qn * pn).sum(-1)  # [B]
    s_neg = torch.einsum("bd,bnd->bn", qn, nn)  # [B, n]
    margins = (s_pos[:, None] - s_neg).reshape(-1).float().cpu().numpy()  # [B*n]
    tiers = np.asarray(negative_tiers)
    return {str(t): float(margins[tiers == t].mean()) for t in sorted(set(negative_tiers))}


def temperature_at(start: float, end: float | None, schedule: str, progress: float) -> float:
    """Temperature at training progress in [0, 1]: fixed, or annealed linearly / by a half cosine from start to end."""
    if schedule == "fixed" or end is None:
        return start
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"temperature schedule must be fixed, linear or cosine, got {schedule!r}")
