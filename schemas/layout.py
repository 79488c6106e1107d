"""The run layout: the only place artifact paths inside RUN_DIR are built.

Paths are plain strings joined with FileSystems.join so local folders and gs:// work alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

STAGES = ("ingest", "embed", "index", "mine")
# Shard store layout written by transforms/index.write_shard; part of the index stage's fingerprint, so
# --resume rebuilds an index an older layout wrote. 1 held ids as fixed-width numpy `U` arrays; 2 as UTF-8 blob
# + int64 offsets (transforms/string_column.py).
STORE_FORMAT = 2


@dataclass(frozen=True)
class RunLayout:
    run_dir: str

    def _join(self, *parts: str) -> str:
        return FileSystems.join(self.run_dir, *parts)

    @property
    def manifest(self) -> str:
        return self._join("manifest.json")

    @property
    def inputs_dir(self) -> str:
        return self._join("inputs")

    def inputs_table(self, name: str) -> str:
        """Folder of accepted, de-duplicated input rows as Parquet parts; name is docs, queries or pairs."""
        return self._join("inputs", name)

    @property
    def embeddings_dir(self) -> str:
        return self._join("embeddings")

    @property
    def index_dir(self) -> str:
        return self._join("index")

    @property
    def index_meta(self) -> str:
        return self._join("index", "index.json")

    def shard_index(self, shard: int, num_shards: int) -> str:
        return self._join("index", f"shard-{shard:05d}-of-{num_shards:05d}.faiss")

    def shard_store(self, shard: int, num_shards: int) -> str:
        """Exact vectors, ids and text hashes of one shard (for exact rescoring and guards)."""
        return self._join("index", f"shard-{shard:05d}-of-{num_shards:05d}.store.npz")

    @property
    def negatives_dir(self) -> str:
        return self._join("negatives")

    def tier_dir(self, tier: str) -> str:
        return self._join("negatives", f"tier={tier}")

    @property
    def deadletter_dir(self) -> str:
        return self._join("deadletter")

    @property
    def warnings_dir(self) -> str:
        return self._join("warnings")

    @property
    def stats_dir(self) -> str:
        """Small JSON files with per-stage counts, written by the pipelines, read into the manifest."""
        return self._join("stats")

    def staging_dir(self, stage: str) -> str:
        """Where a stage writes before its outputs are moved into place (never read by users)."""
        return self._join("_staging", stage)
