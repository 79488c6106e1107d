"""How the embed stage is planned before it runs: model copies per machine (to split the cores between them),
the number of texts of each kind (for the progress lines' percentage and ETA), and the embedding-cache folders.

Plain functions over options, config and RUN_DIR paths; the stage recipe (pipelines/stage_embed.py) calls them.
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from schemas.build_config import EmbedConfig
from schemas.fingerprints import digest, model_fingerprint
from transforms.embed import available_cores
from transforms.embed_cache import cache_namespace


def processes_per_machine(options: PipelineOptions) -> int | None:
    """Model copies per machine, to split its cores between them (None: one SDK process per core)."""
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if "Dataflow" in runner:  # Dataflow starts one Python SDK process per vCPU
        return None
    if "Direct" in runner or "Prism" in runner:
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode in ("multi_processing", "multi_threading"):
            return direct.direct_num_workers or available_cores()  # 0 means one per core
    return 1


def input_rows(table_dir: str) -> int | None:
    """Rows of an inputs/ table from its Parquet footers (None when it is not there yet, e.g. --dry_run)."""
    import pyarrow.parquet as pq

    try:
        paths = [m.path for m in FileSystems.match([FileSystems.join(table_dir, "*.parquet")])[0].metadata_list]
        total = 0
        for path in paths:
            with FileSystems.open(path) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total
    except Exception:  # noqa: BLE001 - progress without a total is still progress
        return None


def embedding_cache_dirs(embed: EmbedConfig) -> dict[str, str]:
    """kind -> the cache namespace folder of EmbedConfig.embedding_cache ({} when no cache is set)."""
    if not embed.embedding_cache:
        return {}
    fingerprint = digest(model_fingerprint(embed.model))  # the bundled version or the files' hashes (no copy)
    root = embed.embedding_cache.rstrip("/")
    return {
        kind: FileSystems.join(
            root, cache_namespace(fingerprint, embed.backend, kind, prompt, embed.max_seq_length)
        )
        for kind, prompt in (("doc", embed.doc_prompt), ("query", embed.query_prompt))
    }
