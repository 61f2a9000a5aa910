"""Command-line options a capture passes to Beam: which flags Beam (or a runner) knows.

Beam drops flags it does not know with a log line, so `--durtion 60` (a typo) once ran an
unbounded capture. `unknown_flags` finds them first, with the closest known spelling.
"""

from __future__ import annotations

import difflib
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

__all__ = ["unknown_flags"]


def _known_parser() -> _BeamArgumentParser:
    """Beam's own parser of every PipelineOptions subclass, as PipelineOptions builds it."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - the same call Beam makes
    return parser


def unknown_flags(args: Sequence[str], also_known: Sequence[str] = ()) -> list[str]:
    """The flags in `args` that no Beam options class (nor `also_known`) defines, each with a
    suggestion where one is close: ["--durtion (did you mean --duration?)"]."""
    parser = _known_parser()
    _, unknown = parser.parse_known_args(list(args))
    known = [flag for action in parser._actions for flag in action.option_strings]
    known += list(also_known)
    problems = []
    for arg in unknown:
        if not arg.startswith("-"):
            continue  # the value of an unknown flag
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        problems.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    return problems
