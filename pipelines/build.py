"""`negforge build`: ingest -> embed -> index -> mine, each stage one Beam pipeline, into RUN_DIR.

Stages run in order; each writes into a staging folder that is moved into RUN_DIR only after its pipeline
finished, and the manifest marks it finished with a fingerprint of the config and the content (input files,
model) it used. `--resume` reuses the finished stages whose fingerprints still match; `--overwrite` starts
from an empty RUN_DIR, and replaces only a negforge run (a folder with its manifest.json) or an empty one.

Killed at any point (SIGKILL included), a build leaves RUN_DIR resumable: the manifest on disk never claims a
stage whose outputs are not all in place (it is rewritten, without the stages about to run, before their
outputs are cleared), manifest.json is replaced through a complete manifest.json.tmp, and a stage's outputs
appear only after its pipeline finished. `--strict` is judged on the manifest's ingest counts, whether
ingest ran now or was reused.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from apache_beam.io.filesystems import FileSystems

from pipelines.options import is_dry_run, make_pipeline_options, runner_name, workers_see_local_files
from pipelines.run_files import clear_stage, promote_stage
from schemas.build_config import BuildConfig, ConfigError
from schemas.fingerprints import inputs_fingerprint, model_fingerprint
from schemas.layout import STAGES, RunLayout
from schemas.manifest import new_manifest, resume_plan, stage_fingerprint
from storage.files import delete_tree, ensure_dir, is_remote, list_files, read_json, write_json

logger = logging.getLogger(__name__)

class RunDirExistsError(FileExistsError):
    """RUN_DIR already holds a run and neither --overwrite nor --resume was given."""


class LocalPathError(ConfigError):
    """A local path was given to a runner whose workers run on other machines and cannot read it."""


class NotARunDirError(FileExistsError):
    """--overwrite or --resume names a folder that holds files but no negforge run."""


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
    """With no explicit --num-shards / --index-factory / --nprobe, those sized for `docs` docs within
    --worker-memory-gb (transforms/sizing.py)."""
    if docs is None or not (config.index.auto_shards or config.index.auto_factory):
        return config
    from transforms.model import model_dimension
    from transforms.sizing import estimated_worker_gb, size_index_config

    dim = model_dimension(config.embed.model)
    index = size_index_config(config.index, int(docs), dim)
    if index.num_shards != config.index.num_shards:
        logger.info("index: %d shards for %d docs x %d dims within --worker-memory-gb %s (about %.1f GB/worker)",
                    index.num_shards, docs, dim, index.worker_memory_gb,
                    estimated_worker_gb(int(docs), dim, index.num_shards))
    if index.auto_factory:
        logger.info("index: --index-factory %s (%s)", index.index_factory, index.factory_reason)
    return dataclasses.replace(config, index=index)


def _docs(manifest: dict) -> int | None:
    docs = (manifest.get("counts") or {}).get("docs")
    return int(docs) if docs is not None else None


def run_content(config: BuildConfig) -> dict:
    """What the stages read besides config: {"inputs": {path: fingerprint}, "model": fingerprint}."""
    from transforms.ingest import input_sources

    return {
        "inputs": inputs_fingerprint([path for _, path in input_sources(config.ingest)]),
        "model": model_fingerprint(config.embed.model),
    }


def _read_manifest(run: RunLayout) -> dict | None:
    """The run's manifest: manifest.json, or the complete .tmp a kill left between its delete and rename."""
    for path in (run.manifest, run.manifest + ".tmp"):
        if FileSystems.exists(path):
            try:
                manifest = read_json(path)
            except ValueError:  # not JSON (a .tmp cut short while manifest.json still existed, or not ours)
                continue
            if isinstance(manifest, dict) and "schema_version" in manifest and "stages" in manifest:
                return manifest
    return None


def _check_ours(run: RunLayout, existing: list[str], flag: str) -> dict | None:
    """The manifest of the negforge run in RUN_DIR; raises NotARunDirError if the files there are not one."""
    manifest = _read_manifest(run)
    staging = FileSystems.join(run.run_dir, "_staging") + "/"
    if manifest is not None or all(path.startswith(staging) or path == run.manifest + ".tmp" for path in existing):
        return manifest  # a run, or the leftovers of one killed before its first manifest
    names = [path[len(run.run_dir.rstrip("/")) + 1 :] for path in existing[:3]]
    more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
    found = "a manifest.json that is not a negforge manifest" if FileSystems.exists(run.manifest) else (
        "no negforge manifest.json"
    )
    raise NotARunDirError(
        f"refusing {flag}: {run.run_dir} is not a negforge run folder ({found}; it holds {len(existing)} "
        f"file(s): {', '.join(names)}{more}); nothing was deleted. Give --output a new or empty folder"
    )


def prepare_run_dir(config: BuildConfig, run: RunLayout, content: dict | None = None, dry_run: bool = False) -> dict:
    """Create, replace or reopen RUN_DIR per --overwrite / --resume; return the manifest to continue.

    --overwrite and --resume act only on a negforge run folder (NotARunDirError otherwise); under dry_run
    nothing is deleted. content: run_content(config), fingerprinted with each stage (None: config only).
    """
    existing = list_files(run.run_dir)
    if existing and not (config.overwrite or config.resume):
        raise RunDirExistsError(
            f"{run.run_dir} already exists and is not empty; pass --overwrite to replace it "
            "or --resume to reuse the stages it finished"
        )
    earlier = _check_ours(run, existing, "--overwrite" if config.overwrite else "--resume") if existing else None
    if existing and config.overwrite:
        if dry_run:
            logger.info("--dry_run: %s would be replaced; nothing was deleted", run.run_dir)
        else:
            delete_tree(run.run_dir)
    if config.resume and earlier is not None:
        config = size_index(config, _docs(earlier))  # as the earlier run sized it, for the fingerprints
        reusable, reason = resume_plan(earlier, config, content)
        keep = set(reusable)
        manifest = dict(earlier)
        manifest["stages"] = {s: v for s, v in earlier.get("stages", {}).items() if s in keep}
        manifest["config"] = config.to_dict()
        manifest["resume"] = {"reused": reusable, "rerun": [s for s in STAGES if s not in keep], "reason": reason}
        if "ingest" not in keep:
            manifest["counts"] = {}
        if "mine" not in keep:
            manifest["selection"] = {}
        manifest["timings_s"] = {s: t for s, t in earlier.get("timings_s", {}).items() if s in keep}
    else:
        manifest = new_manifest(config)
    if content is not None:
        manifest["content"] = content
    if not dry_run:
        ensure_dir(run.run_dir)  # fail now on a bad local path, not after an hour of embedding
    return manifest


def _record_stage(
    manifest: dict, config: BuildConfig, stage: str, stats: dict, seconds: float, content: dict | None
) -> None:
    manifest["stages"][stage] = {
        "finished": True,
        "fingerprint": stage_fingerprint(config, stage, content),
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
    content = None if dry_run else run_content(config)
    manifest = prepare_run_dir(config, run, content, dry_run=dry_run)
    if manifest.get("resume", {}).get("reason"):
        logger.info("--resume: %s; rerunning %s", manifest["resume"]["reason"], ", ".join(manifest["resume"]["rerun"]))
    if not dry_run:
        write_json(run.manifest, manifest)  # on disk before any stage's outputs are cleared (kill-safe)
    started = time.monotonic()
    for stage in STAGES:
        if stage == "index":  # the corpus size is known now
            config = size_index(config, _docs(manifest))
            manifest["config"] = config.to_dict()
        if stage in manifest["stages"]:
            logger.info("stage %s: reused from the earlier run (--resume)", stage)
            _check_strict(config, manifest, stage, run)
            continue
        if not dry_run:
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
        _record_stage(manifest, config, stage, stats or {}, time.monotonic() - stage_started, content)
        manifest["wall_s"] = round(time.monotonic() - started, 3)
        write_json(run.manifest, manifest)
        _check_strict(config, manifest, stage, run)
    return manifest


def _check_strict(config: BuildConfig, manifest: dict, stage: str, run: RunLayout) -> None:
    """--strict: stop after ingest (run now or reused) when the run's accounting has dead-lettered rows."""
    counts = manifest.get("counts") or {}
    if stage == "ingest" and config.ingest.strict and _dead_lettered(counts):
        raise StrictModeError(
            f"--strict: {_dead_lettered(counts)} input row(s) were dead-lettered "
            f"({counts.get('deadletter_by_reason')}); see {run.deadletter_dir}"
        )
