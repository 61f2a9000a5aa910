"""Prism, Beam's local streaming runner and streamtap's default: `--runner=PrismRunner`.

The DirectRunner runs streaming pipelines on Prism too. Beam would download a Prism release from
GitHub; streamtap uses the binary `make install` builds instead (`find_prism`): $STREAMTAP_PRISM,
the repository's .prism/prism, or `prism` on PATH, unless `--prism_location` names one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions, PrismRunnerOptions

from streamtap.errors import RunError
from streamtap.pipelines.runners.base import Runner

__all__ = ["Prism", "find_prism"]


def find_prism() -> str | None:
    """The Prism binary: $STREAMTAP_PRISM, the repo's .prism/prism (make install), or PATH."""
    candidates = [
        os.environ.get("STREAMTAP_PRISM"),
        str(Path(__file__).resolve().parents[3] / ".prism" / "prism"),
        shutil.which("prism"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Prism(Runner):
    """Fills in `--prism_location`; runs everything (bounded or not), needs no watching."""

    names = ("PrismRunner", "DirectRunner")
    summary = "Beam's local streaming runner (the Prism binary `make install` builds)"

    def defaults(self, beam_args: Sequence[str]) -> list[str]:
        args = list(beam_args)
        options = PipelineOptions(args)
        if not self.runs(options) or options.view_as(PrismRunnerOptions).prism_location:
            return args
        location = find_prism()
        if location is None:
            raise RunError(
                "Prism (the local streaming runner) was not found: run `make install`, or "
                "set STREAMTAP_PRISM or --prism_location to the prism binary, or choose "
                "another runner with --runner"
            )
        return [*args, f"--prism_location={location}"]
