"""Exact counts for every stage: one combiner that sums nested dicts of counts, one JSON writer.

Each stage maps what it wants to count to small dicts ({"docs": 1}, {"rows_per_tier": {"hard": 3}}, or
{("file", path, outcome): 1}), flattens them, and ends with

    counts | "SumCounts" >> beam.CombineGlobally(SumCountsFn()) | "WriteStats" >> WriteJson(path)

Sums computed in the pipeline are exact on any runner, retries included (Beam metrics are not).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


def add_counts(total: dict, part: dict) -> dict:
    """Add a (nested) dict of counts into `total` in place and return it."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


class SumCountsFn(beam.CombineFn):
    """Sums nested dicts of counts; an empty input gives {}."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        return add_counts(accumulator, element)

    def merge_accumulators(self, accumulators):
        total: dict = {}
        for accumulator in accumulators:
            add_counts(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


def _write(payload, path: str, encode: Callable[[dict], dict] | None) -> str:
    text = json.dumps(encode(payload) if encode else payload, indent=1, sort_keys=True)
    with FileSystems.create(path) as handle:  # a retry rewrites the whole file with the same content
        handle.write(text.encode("utf-8"))
    return path


class WriteJson(beam.PTransform):
    """One dict -> the JSON file `path` (rewritten whole on a retry). `encode` makes it JSON-able first."""

    def __init__(self, path: str, encode: Callable[[dict], dict] | None = None) -> None:
        super().__init__()
        self._path, self._encode = path, encode

    def expand(self, totals):
        return totals | "WriteJsonFile" >> beam.Map(_write, self._path, self._encode)
