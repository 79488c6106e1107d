"""Cross-batch memory bank: a FIFO queue of recent document embeddings used as extra negatives.

XBM (Wang et al. 2020) / MoCo (He et al. 2020): negatives are decoupled from the batch size. Stored
embeddings are detached copies, so no gradient ever flows into them; each carries its document id so
the loss can mask a query's own judged positives out of the queue (build_candidate_mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class MemoryBank:
    """Ring buffer of at most `size` (embedding, doc_id) entries; the oldest entries leave first."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}; use no bank instead of size 0")
        self.size = size
        self._store = torch.zeros(size, dim, device=device, dtype=dtype)  # [size, d]
        self._ids: list[str | None] = [None] * size
        self._next = 0  # slot the next entry goes to
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def embeddings(self) -> Tensor:
        """[len, d] detached embeddings, oldest first."""
        return self._store[self._order()]

    def ids(self) -> list[str]:
        """Document ids aligned with embeddings()."""
        return [self._ids[i] for i in self._order().tolist()]

    def _order(self) -> Tensor:
        if self._count < self.size:
            return torch.arange(self._count, device=self._store.device)
        return (torch.arange(self.size, device=self._store.device) + self._next) % self.size

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, ids: Sequence[str]) -> None:
        """Add [k, d] embeddings (copied, detached) with their ids; beyond `size` the oldest are dropped."""
        if embeddings.shape[0] != len(ids):
            raise ValueError(f"got {embeddings.shape[0]} embeddings but {len(ids)} ids")
        embeddings, ids = embeddings[-self.size :], list(ids)[-self.size :]  # only the newest can stay
        k = len(ids)
        slots = [(self._next + j) % self.size for j in range(k)]
        self._store[slots] = embeddings.detach().to(self._store.dtype)
        for slot, doc_id in zip(slots, ids):
            self._ids[slot] = doc_id
        self._next = (self._next + k) % self.size
        self._count = min(self._count + k, self.size)
