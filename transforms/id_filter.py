"""Keep the ids a join needs: a Bloom filter of the needed ids as one small side input (KeepIds).

A corpus-sized input (doc vectors, passages) enters a join's shuffle with the rows the join needs plus ~0.05% of
the others, not the whole corpus; the joins are exact, so the few others it lets through find nothing to join.
A filter costs 2 bytes per needed id in every worker that reads it (a Python set ~100).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

BLOOM_BITS_PER_ID = 16  # 2 bytes per needed id: 0.05% of other ids pass (11 hashes)
BLOOM_HASHES = 11
_MASK64 = (1 << 64) - 1
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.int64)  # set bits of each byte value


@dataclass(frozen=True)
class IdFilter:
    """A Bloom filter of ids: `id in f` is True for every added id and for ~0.05% of the others.

    A Python set of the needed ids costs ~100 bytes per id in every worker process that reads the side input
    (millions of ids with MS MARCO-sized query sets); this costs 2. bits: [bit_count // 8] bytes.
    """

    bit_count: int
    bits: bytes

    def __contains__(self, key: str) -> bool:
        bits = self.bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in bloom_positions(key, self.bit_count))

    def estimated_ids(self) -> float:
        """The number of distinct ids added, estimated from the set bits (Swamidass & Baldi 2007:
        n = -(m / k) ln(1 - X / m)); within a few percent while the filter is far from full, as it is here (it
        is sized for the ids each bundle saw first, so ids repeated across bundles leave it roomier still)."""
        set_bits = int(_POPCOUNT[np.frombuffer(self.bits, np.uint8)].sum())
        if set_bits >= self.bit_count:  # full: no estimate; at most one id per bit is what it can tell apart
            return float(self.bit_count)
        return -self.bit_count / BLOOM_HASHES * math.log1p(-set_bits / self.bit_count)


def bloom_bit_count(ids: int) -> int:
    """Bits of the filter for `ids` ids: a whole number of bytes, at least 64 bits."""
    return max(64, -(-ids * BLOOM_BITS_PER_ID // 8) * 8)


def bloom_positions(key: str, bit_count: int) -> list[int]:
    """The BLOOM_HASHES bit positions of an id: double hashing of a 128-bit blake2b, in 64-bit wrapping
    arithmetic so that bloom_positions_of (many ids at once, numpy) gives the same positions on every worker."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
    return [((h1 + i * h2) & _MASK64) % bit_count for i in range(BLOOM_HASHES)]


def bloom_positions_of(keys, bit_count: int) -> np.ndarray:
    """[len(keys) * BLOOM_HASHES] uint64: bloom_positions of every key, one blake2b call per key and the rest in
    numpy (a query requests hundreds of texts: issue 15)."""
    digests = b"".join(hashlib.blake2b(k.encode("utf-8"), digest_size=16).digest() for k in keys)
    halves = np.frombuffer(digests, "<u8").reshape(-1, 2)  # [n, 2]
    h1, h2 = halves[:, :1], halves[:, 1:] | np.uint64(1)
    steps = np.arange(BLOOM_HASHES, dtype=np.uint64)  # [k]
    return ((h1 + steps * h2) % np.uint64(bit_count)).ravel()  # uint64 arithmetic wraps like & _MASK64


class BuildIdFilterFn(beam.CombineFn):
    """(bit_count, bit positions of one or more ids) -> IdFilter (None when no id came)."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, element):
        bit_count, positions = element
        if accumulator is None:
            accumulator = np.zeros(bit_count // 8, np.uint8)
        positions = np.asarray(positions, np.uint64)  # [ids * BLOOM_HASHES]
        masks = np.left_shift(1, positions & np.uint64(7)).astype(np.uint8)
        np.bitwise_or.at(accumulator, positions >> np.uint64(3), masks)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is None:
                continue
            merged = accumulator.copy() if merged is None else merged | accumulator
        return merged

    def extract_output(self, accumulator):
        return None if accumulator is None else IdFilter(len(accumulator) * 8, accumulator.tobytes())


def keep_keyed(element, wanted) -> bool:
    """True when the key of a (key, value) element is in `wanted` (an IdFilter or a set; None: nothing)."""
    return wanted is not None and element[0] in wanted


class FreshIdsFn(beam.DoFn):
    """A batch of ids -> the list of those not seen earlier in the bundle (nothing when none is new): an id added to
    a Bloom filter twice changes nothing but its size, and a popular document is requested by many queries (on
    dense qrels ~430k requests name 5,000 documents). The ids seen are forgotten every SEEN_IDS (bounded memory)."""

    SEEN_IDS = 100_000

    def start_bundle(self):
        self._seen: set[str] = set()

    def process(self, keys):
        if len(self._seen) > self.SEEN_IDS:
            self._seen.clear()
        fresh = [key for key in dict.fromkeys(keys) if key not in self._seen]
        self._seen.update(fresh)
        if fresh:
            yield fresh


class BuildIdFilter(beam.PTransform):
    """ids (batched=True: lists of ids, e.g. one per query) -> one IdFilter of them (None when none came), sized
    from their count after the duplicates each bundle drops (FreshIdsFn)."""

    def __init__(self, batched: bool = False):
        super().__init__()
        self.batched = batched

    def expand(self, ids):
        batches = ids if self.batched else ids | "AsBatches" >> beam.Map(lambda key: [key])
        fresh = batches | "FreshIds" >> beam.ParDo(FreshIdsFn())
        bit_count = beam.pvalue.AsSingleton(
            fresh
            | "CountIds" >> beam.Map(len)
            | "SumIds" >> beam.CombineGlobally(sum)
            | "FilterBits" >> beam.Map(bloom_bit_count)
        )
        return (
            fresh
            | "BitPositions" >> beam.Map(lambda keys, n: (n, bloom_positions_of(keys, n)), n=bit_count)
            | "WantedIdFilter" >> beam.CombineGlobally(BuildIdFilterFn())
        )


class KeepIds(beam.PTransform):
    """(id, value) elements -> those whose id is in `ids` (a PCollection of ids, duplicates allowed; batched=True:
    of lists of ids), plus ~0.05% of the others, so a corpus-sized input enters a shuffle with the rows a join
    needs, not the whole corpus.

    The ids reach every worker as one Bloom filter side input (IdFilter, 2 bytes per id, sized from their count),
    not as a set (~100 bytes per id per worker process): the few others it lets through find nothing to join.
    """

    def __init__(self, ids, batched: bool = False):
        super().__init__()
        self.ids, self.batched = ids, batched

    def expand(self, keyed):
        wanted = self.ids | "IdFilter" >> BuildIdFilter(self.batched)
        return keyed | "KeepWanted" >> beam.Filter(keep_keyed, wanted=beam.pvalue.AsSingleton(wanted))
