"""A capture started the way Beam's tooling starts a Python pipeline: every option a pipeline
option, `--name=value`.

    python -m streamtap.launch --config=pipeline.yaml --duration=3300 --runner=DirectRunner ...

Airflow's BeamRunPythonPipelineOperator (`py_file="streamtap.launch"`, `py_options=["-m"]`,
`pipeline_options={"config": ..., "duration": ...}`), Flink- and Dataflow-style launchers and
scripts pass options this way. streamtap's own are `StreamtapOptions` (--config, --duration,
--status_interval); the rest are Beam's, refused when misspelled (Beam would drop them). It then
runs exactly what `streamtap run CONFIG --duration N ...` runs (config check, sink preflight,
runner defaults, drain on SIGTERM) and exits with its code: 0 when every window was written,
1 when the run failed, 2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streamtap import cli
from streamtap.pipelines.options import StreamtapOptions

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamtap.launch",
        description="Run a streamtap capture; options other than these are Beam pipeline "
        "options (--runner=..., --flink_master=..., ...).",
        allow_abbrev=False,
    )
    StreamtapOptions._add_argparse_args(parser)
    own, beam_args = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if not own.config:
        parser.error("--config is required: the pipeline YAML file of the capture")
    run = ["run", own.config, "--status-interval", repr(own.status_interval)]
    if own.duration is not None:
        run += ["--duration", repr(own.duration)]
    return cli.main([*run, *beam_args])


if __name__ == "__main__":
    sys.exit(main())
