"""The `streamtap` command: validate, run, verify, reassemble, services, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    # Before the parser is built: building it imports Beam (the plug-ins' help), which logs.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _quiet_beam_noise()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    logging.getLogger().setLevel(getattr(logging, args.log_level.upper()))
    if extra and args.command not in ("run", "demo"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args, extra)
    except KeyboardInterrupt:
        return 130


def _quiet_beam_noise() -> None:
    """Hides library chatter that says nothing about the capture."""
    logging.getLogger("apache_beam.utils.subprocess_server").setLevel(logging.ERROR)
    # kafka-python logs every refused connection as an error; the sink reports outages itself.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    class _DropBeamNoise(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            # Prism's own log lines are renamed "PrismRunner" after the level check.
            if record.name == "PrismRunner" and record.levelno < logging.WARNING:
                return False
            return "apitools not found" not in record.getMessage()

    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamNoise())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamtap",
        description="Capture raw binary streams into Parquet, Kafka or Kinesis with Apache Beam.",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="debug, info, warning or error (default warning)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a config and reach its sinks")
    validate.add_argument("config", help="pipeline YAML file")
    validate.add_argument(
        "--offline", action="store_true", help="check the file only; do not contact sinks"
    )
    validate.set_defaults(handler=_validate)

    run = commands.add_parser(
        "run",
        help="run a capture",
        description="Run a capture. Unknown options are passed to Beam (--runner=..., ...).",
        epilog=_runner_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", help="pipeline YAML file")
    run.add_argument(
        "--duration", type=_seconds(above=0), help="seconds to capture; default: until Ctrl-C"
    )
    run.add_argument(
        "--status-interval",
        type=_seconds(above=None),
        default=10.0,
        help="seconds between status lines (0: off)",
    )
    run.add_argument(
        "--status-format",
        choices=("text", "json"),
        default="text",
        help="status lines as text, or one JSON object per stream and interval (on stdout)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while the capture runs",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics are served on (default 127.0.0.1; 0.0.0.0: every interface)",
    )
    run.set_defaults(handler=_run)

    plan = commands.add_parser(
        "plan", help="compute what a capture needs (partitions, shards, files, cores, memory)"
    )
    plan.add_argument("config", help="pipeline YAML file")
    plan.add_argument(
        "--probe",
        type=_seconds(above=0),
        metavar="SECONDS",
        help="measure every source's rate by reading it this long (nothing is written)",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--offline", action="store_true", help="do not contact the sinks (no live check)"
    )
    plan.set_defaults(handler=_plan)

    locations = _location_help()
    verify = commands.add_parser("verify", help="prove a capture has no unmarked gap")
    verify.add_argument("location", help=locations)
    verify.add_argument("--stream", type=_stream_id, help="only this stream id")
    verify.add_argument(
        "--config",
        help="pipeline YAML of the capture: each of its streams must be there (a stream that "
        "captured nothing fails)",
    )
    verify.add_argument("--json", action="store_true", help="print the reports as JSON")
    verify.set_defaults(handler=_verify)

    reassemble = commands.add_parser("reassemble", help="write one stream's bytes to a file")
    reassemble.add_argument("location", help=locations)
    reassemble.add_argument("--stream", type=_stream_id, required=True, help="stream id (exact)")
    reassemble.add_argument("--output", required=True, help="file to write ('-' for stdout)")
    reassemble.add_argument("--start", help="ISO 8601 time: only chunks from this event time on")
    reassemble.add_argument("--end", help="ISO 8601 time: only chunks before this event time")
    reassemble.set_defaults(handler=_reassemble)

    services = commands.add_parser("services", help="start/stop real local services")
    _add_services(services)

    reference = commands.add_parser(
        "config-reference", help="print the config reference (Markdown) of the installed plug-ins"
    )
    reference.set_defaults(handler=_config_reference)

    demo = commands.add_parser("demo", help="capture built-in demo streams, then verify")
    demo.add_argument(
        "--duration", type=_seconds(above=0), default=20.0, help="seconds (default 20)"
    )
    demo.add_argument("--output", default="./capture", help="capture directory (default ./capture)")
    demo.set_defaults(handler=_demo)
    return parser


def _seconds(above: float | None):
    """An argparse type: a finite number of seconds (streamtap.pipelines.options.seconds)."""
    from streamtap.pipelines.options import seconds  # imports Beam: after logging is set up

    return seconds(above)


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _show_status_lines(log_level: str) -> None:
    """Status lines (INFO records of streamtap.status) on stdout at any log level, as bare
    lines; the rate watch's flags and recoveries (streamtap.ratewatch) shown unless the log
    level is above warning."""
    from streamtap.status import STATUS_LOGGER

    status = logging.getLogger(STATUS_LOGGER)
    if not status.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        status.addHandler(handler)
    status.setLevel(logging.INFO)
    status.propagate = False
    if getattr(logging, log_level.upper()) <= logging.WARNING:
        logging.getLogger("streamtap.ratewatch").setLevel(logging.INFO)


def _stream_id(text: str) -> str:
    """An argparse type: a stream id as configs allow it (never a pattern: '*' is no id)."""
    from streamtap.config import STREAM_ID_PATTERN

    if not STREAM_ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a stream id (letters, digits, '.', '_', '-'); give one exact id"
        )
    return text


def _runner_help() -> str:
    from streamtap.pipelines.run import DEFAULT_RUNNER
    from streamtap.plugins import PLUGINS

    lines = [
        f"  {runner.names[0]}{' (default)' if runner.answers_to(DEFAULT_RUNNER) else ''}: "
        f"{runner.summary}"
        for runner in PLUGINS.runners
    ]
    return "\n".join(["runners streamtap prepares (any other Beam runner runs as given):", *lines])


def _location_help() -> str:
    from streamtap.plugins import PLUGINS

    schemes = PLUGINS.location_schemes()
    return "capture location: " + ", ".join(
        f"{scheme}://... ({sink.type_name} sink)" if scheme else f"a directory ({sink.type_name} sink)"
        for scheme, sink in schemes.items()
    )


def _config_reference(args, extra) -> int:
    from streamtap.config.reference import config_reference
    from streamtap.plugins import PLUGINS

    print(config_reference(PLUGINS))
    return EXIT_OK


def _load(path: str):
    from streamtap.errors import ConfigError
    from streamtap.plugins import load_config

    try:
        return load_config(path)
    except ConfigError as error:
        sys.stderr.write(f"streamtap: {error}\n")
        return None


def _preflight(config) -> list[str]:
    """Every sink's preflight problems; reachability problems stay `Unreachable`."""
    from streamtap.errors import Unreachable

    errors = []
    for index, sink in enumerate(config.sinks):
        for error in sink.preflight(config):
            text = f"sinks[{index}] ({sink.type}): {error}"
            errors.append(Unreachable(text) if isinstance(error, Unreachable) else text)
    return errors


def _validate(args, extra) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    errors = [] if args.offline else _preflight(config)
    if errors:
        sys.stderr.write("streamtap: " + "\n  - ".join([f"{args.config} cannot run:", *errors]) + "\n")
        return EXIT_FAILED
    print(f"{args.config}: OK ({len(config.sources)} source(s), {len(config.sinks)} sink(s))")
    return EXIT_OK


def _run(args, extra) -> int:
    from streamtap.errors import RunError, Unreachable
    from streamtap.pipelines.options import flag_error, flag_problems
    from streamtap.pipelines.run import run_capture
    from streamtap.plugins import PLUGINS

    # The extra arguments are Beam's, which drops the ones it does not know: refuse them first.
    unknown = flag_problems(extra, PLUGINS.runners, own_options=False)
    if unknown:
        sys.stderr.write(f"streamtap run: {flag_error(unknown)}\n")
        return EXIT_USAGE
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE

    problems = _preflight(config)
    errors = [p for p in problems if not isinstance(p, Unreachable)]
    if errors:
        sys.stderr.write("streamtap: " + "\n  - ".join([f"{args.config} cannot run:", *errors]) + "\n")
        return EXIT_FAILED
    for problem in problems:
        sys.stderr.write(f"streamtap: warning: {problem}; starting anyway, the sink keeps retrying\n")
    _show_status_lines(args.log_level)
    try:
        return run_capture(
            config, extra, args.duration, args.status_interval,
            status_format=args.status_format, metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    except RunError as error:
        sys.stderr.write(f"streamtap: {error}\n")
        return EXIT_USAGE


def _plan(args, extra) -> int:
    from streamtap.planning import make_plan, probe_rates

    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    rates = probe_rates(config, args.probe) if args.probe else {}
    plan = make_plan(config, rates, live=not args.offline)
    print(json.dumps(plan.as_json(), indent=2) if args.json else plan.table())
    return EXIT_FAILED if plan.problems else EXIT_OK


def _verify(args, extra) -> int:
    from streamtap.captures import read_capture, verify

    expected: list[str] = []
    if args.config:
        config = _load(args.config)
        if config is None:
            return EXIT_USAGE
        expected = [source.id for source in config.sources]
        if args.stream:
            expected = [stream for stream in expected if stream == args.stream]
    try:
        reports = verify(read_capture(args.location, args.stream), expected)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"streamtap: {error}\n")
        return EXIT_USAGE
    if not reports:
        sys.stderr.write(
            f"streamtap: no chunks{' of stream ' + args.stream if args.stream else ''} "
            f"in {args.location}\n"
        )
        return EXIT_FAILED
    failed = [r.stream_id for r in reports.values() if not r.ok]
    if args.json:
        print(json.dumps({
            "location": args.location,
            "ok": not failed,
            "streams": [report.as_json() for report in reports.values()],
        }, indent=2))
        return EXIT_FAILED if failed else EXIT_OK
    for report in reports.values():
        print(report.summary())
        for problem in report.problems:
            print(f"  {problem}")
        if report.problem_count > len(report.problems):
            print(f"  ... and {report.problem_count - len(report.problems)} more")
    print(f"verify: {len(reports) - len(failed)} of {len(reports)} stream(s) OK")
    return EXIT_FAILED if failed else EXIT_OK


def _reassemble(args, extra) -> int:
    from streamtap.captures import parse_time, read_capture, reassemble

    try:
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
        chunks = read_capture(args.location, args.stream)
        if args.output == "-":
            counts = reassemble(chunks, sys.stdout.buffer, start, end)
        else:
            with open(args.output, "wb") as output:
                counts = reassemble(chunks, output, start, end)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"streamtap: {error}\n")
        return EXIT_USAGE
    if counts["chunks"] == 0:
        sys.stderr.write(f"streamtap: no chunks of stream {args.stream} in {args.location}\n")
        return EXIT_FAILED
    note = ""
    if counts["discontinuities"]:
        note = f"; {counts['discontinuities']} discontinuity(ies) inside: bytes may be missing there"
    sys.stderr.write(f"wrote {counts['bytes']} bytes from {counts['chunks']} chunks{note}\n")
    return EXIT_OK


def _add_services(parser: argparse.ArgumentParser) -> None:
    from streamtap.services import SERVICES

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("up", "start"), ("down", "stop"), ("status", "show the state of")):
        sub = actions.add_parser(action, help=f"{text} a service")
        names = sub.add_subparsers(dest="service", required=True, metavar="SERVICE")
        for name, service_class in SERVICES.items():
            service_parser = names.add_parser(name)
            if action == "up":
                service_class.add_cli_arguments(service_parser)
            if action == "status":
                service_parser.add_argument("--json", action="store_true", help="print JSON")
            service_parser.set_defaults(handler=_service, service_class=service_class)


def _service(args, extra) -> int:
    from streamtap.errors import ServiceError

    options = {
        key: value
        for key, value in vars(args).items()
        if key
        not in ("command", "action", "service", "handler", "service_class", "log_level", "json")
    }
    service = args.service_class(**options)
    try:
        if args.action == "up":
            info = service.up()
        elif args.action == "down":
            service.down()
            print(f"{args.service}: stopped")
            return EXIT_OK
        else:
            info = service.status()
    except ServiceError as error:
        sys.stderr.write(f"streamtap: {args.service}: {error}\n")
        return EXIT_FAILED
    if getattr(args, "json", False):
        print(json.dumps({"service": args.service, "running": info is not None, **(info or {})},
                         indent=2, default=str))
        return EXIT_OK if info is not None else EXIT_FAILED
    if info is None:
        print(f"{args.service}: not running")
        return EXIT_FAILED
    print(f"{args.service}: running")
    for key, value in info.items():
        print(f"  {key}: {value}")
    return EXIT_OK


def _demo(args, extra) -> int:
    from streamtap.demo import run_demo
    from streamtap.errors import RunError

    try:
        return run_demo(args.output, args.duration, extra, sys.stderr)
    except RunError as error:
        sys.stderr.write(f"streamtap: {error}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
