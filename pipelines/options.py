"""Beam PipelineOptions from the flags negforge does not own, refusing flags Beam does not know.

Beam alone warns about and drops a mistyped flag; negforge refuses it, so `--num_workes 8` cannot
silently run on one worker.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.local_runner import RUNNER_PATH


class UnknownFlagError(ValueError):
    """A flag is neither negforge's nor Beam's."""


def _known_beam_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    for cls in PipelineOptions.__subclasses__():
        _add_options(cls, parser)
    return parser


def _add_options(cls: type, parser: argparse.ArgumentParser) -> None:
    add = getattr(cls, "_add_argparse_args", None)
    if add is not None:
        try:
            add(parser)
        except argparse.ArgumentError:  # an option registered twice by two subclasses
            pass
    for sub in cls.__subclasses__():
        _add_options(sub, parser)


def make_pipeline_options(beam_args: list[str] | None, **overrides) -> PipelineOptions:
    """PipelineOptions from beam_args; raises UnknownFlagError naming any flag Beam does not know."""
    beam_args = list(beam_args or [])
    _, unknown = _known_beam_parser().parse_known_args(beam_args)
    if unknown:
        raise UnknownFlagError(
            f"unrecognised flag(s): {' '.join(unknown)}; negforge's flags are listed by `negforge build --help`, "
            "the rest must be Beam pipeline options (e.g. --runner, --direct_num_workers, --temp_location)"
        )
    options = PipelineOptions(beam_args, **overrides)
    standard = options.view_as(StandardOptions)
    if standard.runner is None or standard.runner.lower() in ("directrunner", "direct"):
        standard.runner = RUNNER_PATH  # DirectRunner without its Prism download (pipelines/local_runner.py)
    return options


# Runners that run the SDK workers inside the launching process (or its child processes).
_LOCAL_RUNNERS = ("directrunner", "direct", "interactiverunner", "switchingdirectrunner", "offlinedirectrunner")
_THIS_MACHINE = ("localhost", "127.0.0.1", "[::1]", "::1")


def workers_see_local_files(options: PipelineOptions) -> bool:
    """True when every SDK worker runs on this machine, so a local path given to the launcher is readable.

    Direct runners, and portable runners with a LOOPBACK environment or an EXTERNAL worker pool on
    localhost, qualify. Dataflow, and Flink/Spark/Portable with DOCKER, PROCESS or a remote worker pool, do
    not: their workers run elsewhere.
    """
    from apache_beam.options.pipeline_options import PortableOptions

    runner = str(options.view_as(StandardOptions).runner or "direct").rsplit(".", 1)[-1].lower()
    if runner in _LOCAL_RUNNERS:
        return True
    if "dataflow" in runner:
        return False
    portable = options.view_as(PortableOptions)
    environment = str(portable.environment_type or "DOCKER").upper()
    if environment == "LOOPBACK":
        return True
    if environment == "EXTERNAL":
        host = str(portable.environment_config or "").rsplit(":", 1)[0].lower()
        return host in _THIS_MACHINE
    return False


def runner_name(options: PipelineOptions) -> str:
    return str(options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]


def is_dry_run(options: PipelineOptions) -> bool:
    """True for --dry_run=true; Beam keeps the flag's raw string, so 'false' would otherwise be truthy."""
    from apache_beam.options.pipeline_options import TestOptions

    return str(options.view_as(TestOptions).dry_run).lower() in ("true", "1", "yes")


def run_pipeline(pipeline, options: PipelineOptions) -> bool:
    """Run the pipeline to completion; under --dry_run only build the job, returning False.

    DataflowRunner honours dry_run itself (it translates the graph, stages --setup_file and submits
    nothing), so it is called; local runners ignore dry_run, so they are not.
    """
    if is_dry_run(options):
        runner = str(options.view_as(StandardOptions).runner or "").lower()
        if "dataflow" in runner:
            pipeline.run()
        return False
    pipeline.run().wait_until_finish()
    return True
