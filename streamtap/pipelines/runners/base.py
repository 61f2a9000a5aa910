"""The runner plug-in contract: what streamtap fills in, refuses and watches on one Beam runner.

Beam runs whatever `--runner` names; a `Runner` plug-in only adds what a capture needs on that
runner here. `streamtap.pipelines.run.run_capture` finds the plug-in that answers to the runner
the options name (`Plugins.runner(name)`; none: Beam runs it as given, e.g. FnApiRunner) and calls,
in this order:

1. `defaults(beam_args) -> args`: the command-line options with what the runner needs filled in
   (a job server, the worker environment, the Prism binary, ...), never overriding one the user
   gave. Idempotent: `defaults(defaults(a)) == defaults(a)`. Raises RunError (saying what to
   give) when no choice works.
2. `check(options, bounded)`: raises RunError for a capture it cannot run (Spark: an unbounded
   one), before anything starts.
3. `prepare(options)`: just before the pipeline is run, sets up this process for the runner
   (Flink: Beam's LOOPBACK worker pool made to serve several TaskManagers).
4. `watch(options, stream_ids, stop_file)`: after the pipeline was submitted; may start a daemon
   thread that follows the job (Flink: drains a job whose streams have all ended) and returns
   it. `stop_file` is the run's stop file: streams of the run end once it exists, and each stream
   that ended is marked beside it (`streamtap.io.hub.ended_streams`), also by workers in other
   processes of this host.

Every method leaves options that name another runner alone (returns the args unchanged, does not
raise, starts nothing), so calling a plug-in for someone else's options is harmless. A plug-in is a
subclass with a no-argument constructor, one module under pipelines/runners/, and one line in
`streamtap.plugins`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import ClassVar

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

__all__ = ["LOOPBACK_HOSTS", "Runner", "given", "host_of"]

# Host names of this machine's loopback interface, as they appear in master addresses.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class Runner:
    """A Beam runner streamtap knows (see the module docstring for the contract).

    Attributes:
      names: the `--runner` values it answers to, the Beam class name first ("FlinkRunner").
        Matching ignores case, a module path and a missing "Runner" suffix, as Beam does:
        "flink", "FlinkRunner" and "apache_beam.runners.portability.flink_runner.FlinkRunner"
        are all the FlinkRunner.
      summary: one line for the CLI's help.
    """

    names: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""

    @classmethod
    def answers_to(cls, runner: str | None) -> bool:
        """Whether `runner` (a --runner value) names this runner."""
        name = (runner or "").rsplit(".", 1)[-1].lower()
        if not name:
            return False
        spellings = {n.lower() for n in cls.names}
        return name in spellings or f"{name}runner" in spellings

    def runs(self, options: PipelineOptions) -> bool:
        """Whether `options` choose this runner."""
        return self.answers_to(options.view_as(StandardOptions).runner)

    def defaults(self, beam_args: Sequence[str]) -> list[str]:
        """`beam_args` plus the options a capture needs on this runner; unchanged for others."""
        return list(beam_args)

    def check(self, options: PipelineOptions, bounded: bool) -> None:
        """Raises RunError when this runner cannot run the capture (`bounded` or not)."""

    def prepare(self, options: PipelineOptions) -> None:
        """Sets up this process for running the capture on this runner, if it needs anything."""

    def watch(
        self, options: PipelineOptions, stream_ids: Sequence[str], stop_file: str | None = None
    ) -> threading.Thread | None:
        """Follows the submitted job if this runner needs that; returns the thread, if any."""
        return None


def given(args: Sequence[str], name: str) -> bool:
    """Whether --name (or its dashed spelling) is among args, as --name=v or --name v."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(arg.split("=", 1)[0] in spellings for arg in args)


def host_of(master: str) -> str:
    """The host part of a master address: [scheme://]host[:port][/path]; [::1] keeps brackets."""
    address = master.split("://", 1)[-1].split("/", 1)[0]
    if address.startswith("["):  # [::1]:8081
        return address.split("]", 1)[0] + "]"
    return address.rsplit(":", 1)[0] if ":" in address else address
