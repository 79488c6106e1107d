"""Plausibility guard for contextual negatives, and the counts it keeps.

A candidate is kept only if it is well-formed (not empty, length within max_length_ratio of the positive
either way), new for this pair (no earlier candidate with the same normalised text), differs from the
positive in at least one content word (a change of case, spacing or punctuation is no negative), equals no
judged positive of the query, and cos(positive, candidate) lies in [LOW, HIGH) of similarity_band: below
LOW the text drifted, at or above HIGH it is a copy as far as the model can tell. The text checks run
first so that only survivors are embedded. Similarities are decided on a 1e-6 grid (docs/CONTRACT.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.negatives import normalise_text, text_hash
from transforms.contextual.common import content_words

TEXT_REJECTIONS = ("empty", "length_ratio", "duplicate", "no_content_change", "judged_positive")
BAND_REJECTIONS = ("too_dissimilar", "too_similar")
REJECTION_REASONS = TEXT_REJECTIONS + BAND_REJECTIONS


def text_rejection(
    positive: str, candidate: str, judged_hashes: frozenset[str], seen_hashes: set[str], max_length_ratio: float
) -> str | None:
    """The first text check `candidate` fails (a TEXT_REJECTIONS name), or None. Adds its hash to seen_hashes."""
    if not normalise_text(candidate):
        return "empty"
    longer, shorter = max(len(candidate), len(positive)), max(min(len(candidate), len(positive)), 1)
    if longer / shorter >= max_length_ratio:
        return "length_ratio"
    digest = text_hash(candidate)
    if digest in seen_hashes:
        return "duplicate"
    seen_hashes.add(digest)
    if content_words(candidate) == content_words(positive):
        return "no_content_change"
    if digest in judged_hashes:
        return "judged_positive"
    return None


def band_rejection(similarity: float, band: tuple[float, float]) -> str | None:
    """'too_dissimilar' below LOW, 'too_similar' at or above HIGH, else None (decided on a 1e-6 grid)."""
    low, high = band
    value = round(float(similarity), 6)
    if value < low:
        return "too_dissimilar"
    if value >= high:
        return "too_similar"
    return None


@dataclass
class GuardCounts:
    """Per-kind candidates / accepted / selected and rejections per reason (and per kind and reason).

    Invariant: for every kind, candidates == accepted + sum of its rejections; selected <= accepted.
    """

    pairs: int = 0
    pairs_with_negative: int = 0
    deadletter: int = 0
    candidates: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    selected: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> reason -> n

    def candidate(self, kind: str) -> None:
        self.candidates[kind] = self.candidates.get(kind, 0) + 1

    def accept(self, kind: str) -> None:
        self.accepted[kind] = self.accepted.get(kind, 0) + 1

    def select(self, kind: str) -> None:
        self.selected[kind] = self.selected.get(kind, 0) + 1

    def reject(self, kind: str, reason: str) -> None:
        per_kind = self.rejected.setdefault(kind, {})
        per_kind[reason] = per_kind.get(reason, 0) + 1

    def rejected_by_reason(self) -> dict[str, int]:
        return {r: sum(k.get(r, 0) for k in self.rejected.values()) for r in REJECTION_REASONS}

    def merge(self, other: GuardCounts) -> GuardCounts:
        self.pairs += other.pairs
        self.pairs_with_negative += other.pairs_with_negative
        self.deadletter += other.deadletter
        for mine, theirs in (
            (self.candidates, other.candidates),
            (self.accepted, other.accepted),
            (self.selected, other.selected),
        ):
            for kind, n in theirs.items():
                mine[kind] = mine.get(kind, 0) + n
        for kind, reasons in other.rejected.items():
            for reason, n in reasons.items():
                self.rejected.setdefault(kind, {})[reason] = self.rejected.get(kind, {}).get(reason, 0) + n
        return self

    def as_dict(self) -> dict:
        """JSON-able nested counts (the manifest's `contextual` statistics; sums with add_counts)."""
        return {
            "pairs": self.pairs,
            "pairs_with_negative": self.pairs_with_negative,
            "deadletter": self.deadletter,
            "candidates": dict(sorted(self.candidates.items())),
            "accepted": dict(sorted(self.accepted.items())),
            "selected": dict(sorted(self.selected.items())),
            "rejected": self.rejected_by_reason(),
            "rejected_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(self.rejected.items())},
        }

    def metric_increments(self) -> dict[str, int]:
        """Flat counter name -> increment, for Beam metrics (namespace negforge.contextual)."""
        flat = {"pairs": self.pairs, "pairs_with_negative": self.pairs_with_negative, "deadletter": self.deadletter}
        for prefix, table in (
            ("candidates", self.candidates),
            ("accepted", self.accepted),
            ("selected", self.selected),
        ):
            flat.update({f"{prefix}_{kind}": n for kind, n in table.items()})
        flat.update({f"rejected_{reason}": n for reason, n in self.rejected_by_reason().items()})
        for kind, reasons in self.rejected.items():
            flat.update({f"rejected_by_kind_{kind}_{reason}": n for reason, n in reasons.items()})
        return {name: n for name, n in flat.items() if n}

    @classmethod
    def from_metric_counters(cls, counters: dict[str, int], kinds: tuple[str, ...]) -> GuardCounts:
        """Inverse of metric_increments (committed Beam counter values by name)."""
        counts = cls(
            pairs=counters.get("pairs", 0),
            pairs_with_negative=counters.get("pairs_with_negative", 0),
            deadletter=counters.get("deadletter", 0),
        )
        for kind in kinds:
            for prefix, table in (
                ("candidates", counts.candidates),
                ("accepted", counts.accepted),
                ("selected", counts.selected),
            ):
                if counters.get(f"{prefix}_{kind}"):
                    table[kind] = counters[f"{prefix}_{kind}"]
            for reason in REJECTION_REASONS:
                if counters.get(f"rejected_by_kind_{kind}_{reason}"):
                    counts.rejected.setdefault(kind, {})[reason] = counters[f"rejected_by_kind_{kind}_{reason}"]
        return counts
