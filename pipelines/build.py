"""`negforge build`: ingest -> embed -> index -> mine, each stage one Beam pipeline, into RUN_DIR.

Stages run in order; each writes into a staging folder that is moved into RUN_DIR only after its pipeline
finished, and the manifest marks it finished with a fingerprint of the config it used. `--resume` reuses
the finished stages whose fingerprints still match; `--overwrite` starts from an empty RUN_DIR.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from apache_beam.io.filesystems import FileSystems

from pipelines.options import is_dry_run, make_pipeline_options, runner_name, workers_see_local_files
from pipelines.run_files import (
    clear_stage,
    delete_tree,
    ensure_dir,
    is_remote,
    list_files,
    promote_stage,
    read_json,
    write_json,
)
from schemas.build_config import BuildConfig, ConfigError
from schemas.layout import STAGES, RunLayout
from schemas.manifest import new_manifest, reusable_stages, stage_fingerprint

logger = logging.getLogger(__name__)

class RunDirExistsError(FileExistsError):
    """RUN_DIR already holds a run and neither --overwrite nor --resume was given."""


class LocalPathError(ConfigError):
    """A local path was given to a runner whose workers run on other machines and cannot read it."""


class StrictModeError(RuntimeError):
    """--strict was given and some input rows were dead-lettered."""


def _run_ingest(*args, **kwargs) -> dict:
    from pipelines.stage_ingest import run_ingest

    return run_ingest(*args, **kwargs)


def _run_embed(*args, **kwargs) -> dict:
    from pipelines.stage_embed import run_embed

    return run_embed(*args, **kwargs)


def _run_index(*args, **kwargs) -> dict:
    from pipelines.stage_index import run_index

    return run_index(*args, **kwargs)


def _run_mine(*args, **kwargs) -> dict:
    from pipelines.stage_mine import run_mine

    return run_mine(*args, **kwargs)


# stage -> its run function (config, run, out, beam_args, test_pipeline=...); each imports its stage lazily
STAGE_FUNCTIONS = {"ingest": _run_ingest, "embed": _run_embed, "index": _run_index, "mine": _run_mine}


def preflight(config: BuildConfig) -> None:
    """Every check that can fail without heavy work: inputs, model, index factory, WordNet."""
    from transforms.index import validate_index_config
    from transforms.ingest_checks import validate_inputs
    from transforms.model import model_dimension, validate_model_spec

    validate_inputs(config.ingest)
    validate_model_spec(config.embed.model)
    validate_index_config(config.index, model_dimension(config.embed.model))
    if config.contextual.per_pair > 0:
        from transforms.contextual.wordnet_install import prepare_wordnet

        prepare_wordnet()


def path_flags(config: BuildConfig) -> list[tuple[str, str]]:
    """(flag, path) of every path the workers read or write; 'bundled' models ship inside the package."""
    flags = [
        ("--beir", config.ingest.beir_dir),
        ("--pairs", config.ingest.pairs_file),
        ("--corpus", config.ingest.corpus_file),
        ("--output", config.output),
        ("--model", None if config.embed.model == "bundled" else config.embed.model),
        ("--embedding-cache", getattr(config.embed, "embedding_cache", None)),
    ]
    return [(flag, path) for flag, path in flags if path]


def check_paths_reachable(config: BuildConfig, options) -> None:
    """Refuse, before any work, local paths that the runner's workers (other machines) cannot see."""
    if workers_see_local_files(options):
        return
    local = [f"{flag} {path}" for flag, path in path_flags(config) if not is_remote(path)]
    if local:
        raise LocalPathError(
            f"--runner {runner_name(options)} runs its workers on other machines, which cannot read the local "
            f"path(s) {'; '.join(local)}. Copy them to shared storage (e.g. `gsutil cp -r DIR gs://BUCKET/DIR`) "
            "and pass the gs:// paths, or run with --runner DirectRunner"
        )


def size_index(config: BuildConfig, docs: int | None) -> BuildConfig:
    """With no explicit --num-shards, the shard count for `docs` docs within --worker-memory-gb."""
    if not config.index.auto_shards or docs is None:
        return config
    from transforms.model import model_dimension
    from transforms.sizing import estimated_worker_gb, shards_for

    dim = model_dimension(config.embed.model)
    shards = shards_for(int(docs), dim, config.index.worker_memory_gb)
    if shards != config.index.num_shards:
        logger.info("index: %d shards for %d docs x %d dims within --worker-memory-gb %s (about %.1f GB/worker)",
                    shards, docs, dim, config.index.worker_memory_gb, estimated_worker_gb(int(docs), dim, shards))
    return dataclasses.replace(config, index=dataclasses.replace(config.index, num_shards=shards))


def _docs(manifest: dict) -> int | None:
    docs = (manifest.get("counts") or {}).get("docs")
    return int(docs) if docs is not None else None


def prepare_run_dir(config: BuildConfig, run: RunLayout) -> dict:
    """Create, replace or reopen RUN_DIR per --overwrite / --resume; return the manifest to continue."""
    existing = list_files(run.run_dir)
    if existing and not (config.overwrite or config.resume):
        raise RunDirExistsError(
            f"{run.run_dir} already exists and is not empty; pass --overwrite to replace it "
            "or --resume to reuse the stages it finished"
        )
    if existing and config.overwrite:
        delete_tree(run.run_dir)
    if config.resume and FileSystems.exists(run.manifest):
        manifest = read_json(run.manifest)
        config = size_index(config, _docs(manifest))  # as the earlier run sized it, for the fingerprints
        keep = set(reusable_stages(manifest, config))
        manifest["stages"] = {s: v for s, v in manifest.get("stages", {}).items() if s in keep}
        manifest["config"] = config.to_dict()
        return manifest
    ensure_dir(run.run_dir)  # fail now on a bad local path, not after an hour of embedding
    return new_manifest(config)


def _record_stage(manifest: dict, config: BuildConfig, stage: str, stats: dict, seconds: float) -> None:
    manifest["stages"][stage] = {
        "finished": True,
        "fingerprint": stage_fingerprint(config, stage),
        "stats": stats,
        "wall_s": round(seconds, 3),
    }
    manifest["timings_s"][stage] = round(seconds, 3)
    if stage == "ingest":
        manifest["counts"] = stats
    elif stage == "embed":
        manifest["model"].update({k: stats[k] for k in ("dim",) if k in stats})
    elif stage == "mine":
        manifest["selection"] = stats


def _dead_lettered(stats: dict) -> int:
    return sum(int(v) for v in stats.get("deadletter_by_reason", {}).values())


def run_build(config: BuildConfig, beam_args: list[str] | None = None, test_pipeline_factory=None) -> dict:
    """Run every stage not reusable from an earlier run; return the final manifest.

    test_pipeline_factory: optional zero-argument callable giving a fresh TestPipeline per stage (tests).
    """
    beam_args = list(beam_args or [])
    options = make_pipeline_options(beam_args)
    dry_run = is_dry_run(options)
    check_paths_reachable(config, options)
    preflight(config)
    run = RunLayout(config.output)
    manifest = prepare_run_dir(config, run)
    started = time.monotonic()
    for stage in STAGES:
        if stage == "index":  # the corpus size is known now
            config = size_index(config, _docs(manifest))
            manifest["config"] = config.to_dict()
        if stage in manifest["stages"]:
            logger.info("stage %s: reused from the earlier run (--resume)", stage)
            continue
        clear_stage(run, stage)
        stage_started = time.monotonic()
        logger.info("stage %s: running", stage)
        out = RunLayout(run.staging_dir(stage))
        test_pipeline = test_pipeline_factory() if test_pipeline_factory else None
        stats = STAGE_FUNCTIONS[stage](config, run, out, beam_args, test_pipeline=test_pipeline)
        if dry_run:
            logger.info("stage %s: graph built (--dry_run); nothing was run", stage)
            continue
        promote_stage(run, stage)
        _record_stage(manifest, config, stage, stats or {}, time.monotonic() - stage_started)
        manifest["wall_s"] = round(time.monotonic() - started, 3)
        write_json(run.manifest, manifest)
        if stage == "ingest" and config.ingest.strict and _dead_lettered(stats):
            raise StrictModeError(
                f"--strict: {_dead_lettered(stats)} input row(s) were dead-lettered "
                f"({stats.get('deadletter_by_reason')}); see {run.deadletter_dir}"
            )
    return manifest
