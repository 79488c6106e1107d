"""The local runner negforge uses for `--runner DirectRunner` (and when no runner is named).

Beam's DirectRunner first tries the Prism runner, which downloads a binary from GitHub at run time;
negforge promises that nothing downloads at run time, so it goes straight to Beam's FnApiRunner (what
DirectRunner falls back to anyway), honouring --direct_running_mode and --direct_num_workers.
"""

from __future__ import annotations

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

RUNNER_PATH = "pipelines.local_runner.OfflineDirectRunner"


class OfflineDirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner minus the Prism download attempt."""

    def run_pipeline(self, pipeline, options):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
        return fn_runner.FnApiRunner(provision_info=provision_info).run_pipeline(pipeline, options)
