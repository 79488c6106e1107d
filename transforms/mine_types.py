"""What travels between the mine stage's steps: a query's payload to the shards, each shard's answer to the merge,
and the merged negatives of a query to the row builder (transforms/mine_shard.py, mine_merge.py, mine_rows.py)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from transforms import mining_math as mm

CONTEXTUAL_PAIRS = "contextual_pairs"


@dataclass
class QueryPayload:
    """What a shard needs to mine one query."""

    query_id: str
    vector: np.ndarray  # [dim] float32, L2-normalised
    positives: mm.Positives
    depth: int  # raw results to search (global complete prefix)


def without_vectors(payload: QueryPayload) -> QueryPayload:
    """The payload minus its query and positive vectors (what rows need: ids, text hashes, scores)."""
    positives = payload.positives
    return replace(
        payload,
        vector=np.zeros(0, np.float32),
        positives=mm.Positives(positives.ids, positives.text_hashes, np.zeros((len(positives.ids), 0), np.float32),
                               positives.scores),
    )


@dataclass
class ShardCandidates:
    """One shard's answer for one query: per pair group, a window of the shard's order that starts at the group's
    margin threshold (the first document the margins keep) and runs until the group has enough there; the windows
    are stored once, as their union. Windows run from the threshold into the semi-hard band, so on dense qrels
    the union is most of the shard: its rows travel as plain arrays (ids packed as UTF-8 bytes, scores as their
    1e-6 grid units, all the merge's decisions need); exact scores and similarities to the positives only for
    the rows a group may pick (issue 15: object arrays of ids and float64 scores of every union row made the
    GroupByQuery buffer the largest of the stage). Text hashes stay on the shard."""

    shard: int
    ntotal: int
    # the union, best first by (-rounded score, id), zlib-compressed (its ids and grid units compress ~3x; it is
    # most of the GroupByQuery buffer): units [u] int32 round(cos(query, candidate) / SCORE_GRID) (topk.round_scores
    # in grid steps), codes [u] int8 mining_math.candidate_codes, id lengths [u] (id_width bytes each), then the
    # ids' UTF-8 bytes back to back; read through the properties below
    union: bytes
    union_size: int  # u
    id_width: int
    pick_rows: np.ndarray  # [r] int32 ascending union rows some group may pick
    pick_scores: np.ndarray  # [r] float64 their exact cos(query, candidate)
    above: np.ndarray  # [g] int64 shard documents ranked above group g's margin threshold
    lo: np.ndarray  # [g] int64 group g's window is rows lo[g]:hi[g] of the union
    hi: np.ndarray  # [g] int64
    complete: np.ndarray  # [g] bool: the window holds every shard document at or below the threshold
    detail_rows: np.ndarray  # [r] int32 union rows a group may pick, group by group
    detail_groups: np.ndarray  # [r] int32 the group of each
    sims: np.ndarray  # [sum of the groups' sizes] float32 cos(positive, candidate), the group's pairs only
    draw_count: int  # m: random-tier draws of the shard (a prefix of which travels below)
    draw_ids: np.ndarray  # [t <= m] str, the draws any group may reach (_draws_needed), in draw order
    draw_codes: np.ndarray  # [t] int8 candidate codes of the draws
    draw_scores: np.ndarray  # [t] float64
    draw_sims: np.ndarray  # [t, p] float32
    rounds: int = 0  # window growths this shard ran for the query (all groups)
    payload: QueryPayload | None = None  # shard 0 hands the payload back to the merge

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if "_unpacked" not in self.__dict__:  # once, where the answer is merged
            raw, u = zlib.decompress(self.union), self.union_size
            self.__dict__["_unpacked"] = (
                np.frombuffer(raw, "<i4", u, 0),
                np.frombuffer(raw, np.int8, u, 4 * u),
                np.frombuffer(raw, f"<u{self.id_width}", u, 5 * u),
                np.frombuffer(raw, np.uint8, offset=(5 + self.id_width) * u),
            )
        return self.__dict__["_unpacked"]

    @property
    def units(self) -> np.ndarray:
        return self._arrays()[0]

    @property
    def codes(self) -> np.ndarray:
        return self._arrays()[1]

    @property
    def id_lengths(self) -> np.ndarray:
        return self._arrays()[2]

    @property
    def id_bytes(self) -> np.ndarray:
        return self._arrays()[3]


MINED_TIERS = ("hard", "semi_hard", "random")  # MinedQuery.tiers codes


@dataclass
class MinedNegative:
    negative_id: str
    tier: str
    rank: int | None  # 1-based position in the raw retrieval list; None for random
    score_negative: float
    similarity: float  # cos(positive, negative) of the pair it was listed for
    generator: str


@dataclass
class MinedQuery:
    """The negatives of one query, as arrays: the distinct (negative, tier) of the query, and per pair the list
    of them its rows hold (pairs sharing a margin reference share a list) with cos(positive, negative)."""

    query_id: str
    payload: QueryPayload
    negative_ids: np.ndarray  # [n] str
    tiers: np.ndarray  # [n] int8 index into MINED_TIERS
    ranks: np.ndarray  # [n] int64 1-based raw rank, -1 for random
    scores: np.ndarray  # [n] float64 cos(query, negative)
    pair_offsets: np.ndarray  # [p + 1] pair j's list is entries pair_offsets[j]:pair_offsets[j + 1]
    pair_negatives: np.ndarray  # [e] int32 index into the negatives, best first within each tier
    pair_sims: np.ndarray  # [e] float32 cos(positive_j, negative)
    generator: str  # of the mined tiers (random: 'uniform')
    stats: dict

    def negatives_of_pair(self, j: int) -> list[MinedNegative]:
        """Pair j's list as objects (what the tests read; rows are built from the arrays)."""
        a, b = int(self.pair_offsets[j]), int(self.pair_offsets[j + 1])
        return [self._negative(int(n), float(sim))
                for n, sim in zip(self.pair_negatives[a:b].tolist(), self.pair_sims[a:b].tolist())]

    def _negative(self, n: int, similarity: float) -> MinedNegative:
        tier = MINED_TIERS[int(self.tiers[n])]
        return MinedNegative(
            negative_id=str(self.negative_ids[n]),
            tier=tier,
            rank=None if tier == "random" else int(self.ranks[n]),
            score_negative=float(self.scores[n]),
            similarity=similarity,
            generator="uniform" if tier == "random" else self.generator,
        )

