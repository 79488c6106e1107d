"""The mining selection statistics recorded by the mine stage in manifest.json, read defensively.

Expected shape (the orchestrator writes it): manifest["stages"]["mine"]["stats"] = {candidates_seen,
dropped_<guard>..., deeper_search_histogram, ...}. Anything missing becomes None / empty; other scalar
entries are passed through under "other".
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def _as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _as_number(value: object) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def selection_statistics(manifest: dict) -> dict:
    """{"mine_finished", "candidates_seen", "dropped": {guard: {"rows", "share_of_candidates"}},
    "deeper_search_histogram", "other": {name: scalar}} from the manifest (empty values when absent)."""
    mine = _as_dict(_as_dict(manifest.get("stages")).get("mine"))
    stats = _as_dict(mine.get("stats"))
    if not stats:
        logger.info("manifest has no stages.mine.stats; selection statistics left empty")
    seen = _as_number(stats.get("candidates_seen"))
    # the mine stage writes {"dropped": {guard: n}}; flat "dropped_<guard>" keys are read too
    counts = {f"dropped_{guard}": n for guard, n in _as_dict(stats.get("dropped")).items()}
    counts.update({key: value for key, value in stats.items() if key.startswith("dropped_")})
    dropped = {}
    for key in sorted(counts):
        count = _as_number(counts[key])
        if count is not None:
            share = count / seen if seen else None
            dropped[key.removeprefix("dropped_")] = {"rows": count, "share_of_candidates": share}
    other = {
        key: value
        for key, value in sorted(stats.items())
        if key != "candidates_seen" and not key.startswith("dropped_") and isinstance(value, (int, float, str, bool))
    }
    return {
        "mine_finished": mine.get("finished"),
        "candidates_seen": seen,
        "dropped": dropped,
        "deeper_search_histogram": stats.get("deeper_search_histogram"),
        "other": other,
    }
