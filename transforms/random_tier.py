"""The random tier: uniform negatives over the surviving corpus, drawn per shard and picked by rejection sampling.

Each shard draws a uniform permutation prefix of its documents (random_draw_count of them); the merge visits the
shards' draws in an order that depends only on the shard sizes and the per-query rng (RandomVisits) and keeps
the first K that passed the guards (pick_random is the reference semantics).
"""

from __future__ import annotations

import numpy as np

from schemas.build_config import MiningConfig

_UNIFORM_CHUNK = 32  # doubles drawn at once by pick_random (the rng is not used after it)


def random_draw_count(mining: MiningConfig, num_positives: int, ntotal: int) -> int:
    """Draws per shard for the random tier: room for K plus everything that may be rejected."""
    if mining.random == 0:
        return 0
    reserve = mining.hard + mining.semi_hard + num_positives
    return min(ntotal, 2 * (mining.random + reserve) + 16)


class RandomVisits:
    """The (shard, draw index) order in which pick_random visits the shards' draws, grown on demand.

    pick_random's next visit depends only on the shard sizes, the draw counts and the rng, never on which draws
    passed the guards or were chosen: every pair group of a query (each with a fresh rng of the same stream)
    visits the same sequence and keeps the first K draws it accepts, so one sequence serves all of them.
    """

    def __init__(self, shard_sizes: np.ndarray, draw_counts: list[int], rng: np.random.Generator):
        self._rng, self._sizes = rng, [int(c) for c in draw_counts]
        self._pointers = [0] * len(self._sizes)
        self._weights = np.asarray(shard_sizes, dtype=np.float64).copy()
        self._cdf, self._uniforms, self._u = None, np.zeros(0), 0
        self.shards: list[int] = []
        self.draws: list[int] = []
        self.done = False  # every shard's draws are spent

    def extend(self, count: int) -> None:
        """Visit until `count` visits are known or the draws are spent (the same steps as pick_random's loop)."""
        sizes, pointers, weights = self._sizes, self._pointers, self._weights
        while len(self.shards) < count and not self.done:
            spent = [s for s in range(len(sizes)) if pointers[s] >= sizes[s] and weights[s] > 0]
            if spent or self._cdf is None:
                weights[spent] = 0.0
                total = weights.sum()
                if total <= 0:
                    self.done = True
                    break
                self._cdf = np.cumsum(weights / total)
                self._cdf /= self._cdf[-1]
            if self._u == len(self._uniforms):
                self._uniforms, self._u = self._rng.random(_UNIFORM_CHUNK), 0
            # the visits up to the next that spends a shard see this cdf: searched at once (issue 15)
            uniforms = self._uniforms[self._u : self._u + count - len(self.shards)]
            chosen = np.searchsorted(self._cdf, uniforms, side="right")  # [c] shard of each visit
            seen = np.cumsum(chosen[:, None] == np.arange(len(sizes)), axis=0)[np.arange(len(chosen)), chosen]
            draws = np.asarray(pointers)[chosen] + seen - 1  # [c] each visit's draw index in its shard
            spends = np.flatnonzero(draws + 1 >= np.asarray(sizes)[chosen])
            n = int(spends[0]) + 1 if len(spends) else len(chosen)
            self._u += n
            self.shards += chosen[:n].tolist()
            self.draws += draws[:n].tolist()
            for s, d in zip(chosen[:n].tolist(), draws[:n].tolist()):
                pointers[s] = d + 1


def pick_random(
    shard_sizes: np.ndarray,  # [S] ntotal of each shard
    draws_ok: list[np.ndarray],  # per shard: [m_s] bool, draw passed the guards
    draws_ids: list[np.ndarray],  # per shard: [m_s] str doc ids in draw order
    k: int,
    exclude: set[str],
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """K (shard, draw index) picks, uniform over the corpus: rejection sampling over the shards' draw orders.
    The reference semantics of the random tier: mining picks through RandomVisits, which the tests hold to it.

    Each shard holds a uniform random permutation prefix of its documents; a shard is picked with probability
    ∝ its size, its next draw is taken, and kept only if it passed the guards and is not already chosen. This
    is exactly uniform over surviving documents while no shard's prefix runs out (a shard whose prefix is
    spent drops out; its prefix covers the whole shard when the shard is small).
    """
    pointers = [0] * len(draws_ok)
    sizes = [len(ok) for ok in draws_ok]
    weights = np.asarray(shard_sizes, dtype=np.float64).copy()
    chosen: list[tuple[int, int]] = []
    taken: set[str] = set()
    cdf, uniforms, u = None, np.zeros(0), 0
    while len(chosen) < k:
        spent = [s for s in range(len(sizes)) if pointers[s] >= sizes[s] and weights[s] > 0]
        if spent or cdf is None:
            weights[spent] = 0.0
            total = weights.sum()
            if total <= 0:
                break
            cdf = np.cumsum(weights / total)  # what rng.choice(p=weights / total) searches, computed once
            cdf /= cdf[-1]
        if u == len(uniforms):  # a chunk of the doubles rng.choice would draw one by one: the same stream
            uniforms, u = rng.random(_UNIFORM_CHUNK), 0
        s = int(np.searchsorted(cdf, uniforms[u], side="right"))
        u += 1
        i = pointers[s]
        pointers[s] += 1
        if draws_ok[s][i]:
            doc_id = str(draws_ids[s][i])
            if doc_id not in exclude and doc_id not in taken:
                chosen.append((s, i))
                taken.add(doc_id)
    return chosen
