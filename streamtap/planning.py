"""`streamtap plan`: what a capture needs, computed from its streams' rates instead of guessed.

Each stream's rate is its declared `expected_rate` (a synthetic source knows its own), or is
measured by `probe`: a real session of every source for N seconds, counting bytes, writing
nothing. The chunk settings turn rates into chunks; every sink plug-in turns them into what it
needs (`SinkConfig.plan`: Kafka partitions, Kinesis shards, Parquet files); the runner's share
(chunks per second to schedule, CPU cores, memory) comes from the measured figures in
BENCHMARKS.md. Every figure names the limit or measurement it came from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Mapping

from streamtap.config import PipelineConfig
from streamtap.config.capacity import Figure, StreamLoad, chunk_rate

__all__ = ["Plan", "make_plan", "probe_rates"]

# The runner's cost model, from BENCHMARKS.md on the 2-core reference machine (fifth pass):
# scenario 2, 1,000 radio streams of 16 kB/s on Prism: 0.51 cores, 697 MiB RSS; scenario 1, one
# TCP stream to Parquet: ~1.2 CPU-s per 384 MiB.
_CORES_FIXED = 0.05
_CORES_PER_STREAM = 0.00045
_CORES_PER_MB_S = 0.0033
_MIB_FIXED = 250.0
_MIB_PER_STREAM = 0.45
_COST_BASIS = "BENCHMARKS.md scenarios 1 and 2 (2-core machine)"


@dataclass
class Plan:
    loads: list[StreamLoad]
    figures: list[Figure]
    unknown: list[str] = field(default_factory=list)  # streams with no rate: declare or probe

    @property
    def problems(self) -> list[Figure]:
        return [figure for figure in self.figures if figure.problem]

    @property
    def warnings(self) -> list[Figure]:
        return [figure for figure in self.figures if figure.warning]

    def as_json(self) -> dict:
        return {
            "streams": [dataclasses.asdict(load) for load in self.loads],
            "streams_without_rate": self.unknown,
            "figures": [dataclasses.asdict(figure) for figure in self.figures],
            "problems": [figure.problem for figure in self.problems],
            "warnings": [figure.warning for figure in self.warnings],
        }

    def table(self) -> str:
        lines = ["streams:"]
        for load in self.loads:
            lines.append(
                f"  {load.stream_id:<20} {_rate(load.rate):>12}  {load.chunks_per_second:8.2f} "
                f"chunks/s of {_bytes(load.chunk_bytes)}  ({load.rate_basis})"
            )
        for stream_id in self.unknown:
            lines.append(f"  {stream_id:<20} {'?':>12}  no rate: set its expected_rate (or --probe it)")
        scope = None
        for figure in self.figures:
            if figure.scope != scope:
                scope = figure.scope
                lines.append(f"{scope}:")
            value = f"{figure.value:,.0f}" if figure.value >= 100 else f"{figure.value:,.2f}"
            mark = "  !! " + figure.problem if figure.problem else ""
            mark += "  (warning: " + figure.warning + ")" if figure.warning else ""
            lines.append(f"  {figure.what:<34} {value:>12} {figure.unit:<10} ({figure.basis}){mark}")
        return "\n".join(lines)


def make_plan(
    config: PipelineConfig, rates: Mapping[str, tuple[float | None, str]], live: bool = False
) -> Plan:
    """The plan for `config` with these {stream id: (bytes/s, basis)} (probed; None: the probe
    failed); other streams use their declared rate, or are listed as unknown. live: each sink
    also checks its live service against the plan (I/O)."""
    loads, unknown, failed = [], [], []
    for source in config.sources:
        known = rates.get(source.id)
        if known is not None and known[0] is None:
            failed.append(Figure("probe", source.id, 0, "B/s", "--probe", problem=known[1]))
            known = None
        known = known or source.declared_rate()
        if known is None:
            unknown.append(source.id)
            continue
        rate, basis = known
        chunk_bytes, per_second = chunk_rate(rate, config.chunk.max_bytes, config.chunk.max_seconds)
        if config.releases_whole_windows() and rate > 0:
            per_second += 1 / config.window_seconds  # a cut where each window ends
        loads.append(StreamLoad(source.id, rate, basis, chunk_bytes, per_second))
    figures = failed + _runner_figures(config, loads)
    for index, sink in enumerate(config.sinks):
        scope = f"sinks[{index}] ({sink.type})"
        planned = sink.plan(loads, config)
        if live:  # the live service against the plan: reachable brokers, their limits
            planned += sink.plan_live(planned, config)
        figures += [dataclasses.replace(f, scope=scope) for f in planned]
    return Plan(loads, figures, unknown)


def _runner_figures(config: PipelineConfig, loads: list[StreamLoad]) -> list[Figure]:
    streams = len(config.sources)
    total_rate = sum(load.rate for load in loads)
    chunks = sum(load.chunks_per_second for load in loads)
    cores = _CORES_FIXED + _CORES_PER_STREAM * streams + _CORES_PER_MB_S * total_rate / 1e6
    held = total_rate * config.window_seconds if config.releases_whole_windows() else 0.0
    memory = _MIB_FIXED + _MIB_PER_STREAM * streams + 2 * held / 2**20
    return [
        Figure("runner", "bytes per second, all streams", total_rate, "B/s",
               "sum of the streams' rates"),
        Figure("runner", "chunks per second to schedule", chunks, "chunks/s",
               f"chunk.max_bytes {config.chunk.max_bytes}, chunk.max_seconds "
               f"{config.chunk.max_seconds:g}"),
        Figure("runner", "CPU estimate", cores, "cores",
               f"{_CORES_FIXED} + {_CORES_PER_STREAM}/stream + {_CORES_PER_MB_S}/(MB/s), "
               f"{_COST_BASIS}"),
        Figure("runner", "memory estimate", memory, "MiB",
               f"{_MIB_FIXED:g} + {_MIB_PER_STREAM}/stream + 2x the windows held, {_COST_BASIS}"),
    ]


def probe_rates(config: PipelineConfig, seconds: float) -> dict[str, tuple[float | None, str]]:
    """Measures every source's rate by reading it for `seconds` (nothing is written).

    A stream whose probe fails gets rate None and the error as its basis.
    """
    return asyncio.run(_probe_all(config, seconds))


async def _probe_all(config: PipelineConfig, seconds: float) -> dict[str, tuple[float | None, str]]:
    results = await asyncio.gather(*(_probe(source, seconds) for source in config.sources))
    return {source.id: result for source, result in zip(config.sources, results)}


class _CountingSink:
    """A ByteSink that only counts: what `probe` needs of a session.

    The rate is taken over the second half of the probe, from write to write: servers send a
    burst at connect (Icecast's burst-on-connect is 64 KB, four seconds of a 128 kbit/s station),
    and reads come in batches (an http source gathers packets for up to 0.5 s), so the bytes of
    the first write after halfway arrived before it and are not counted.
    """

    def __init__(self, started: float, seconds: float) -> None:
        self.bytes = 0
        self._halfway = started + seconds / 2
        self._first: tuple[float, int] | None = None  # (time, bytes) at the first write after halfway
        self._last_write = started

    def write(self, data, whole: bool = False) -> None:
        now = time.monotonic()
        self.bytes += len(data)
        self._last_write = now
        if self._first is None and now >= self._halfway:
            self._first = (now, self.bytes)

    def set_tags(self, tags) -> None:
        pass

    async def wait_for_room(self) -> None:
        pass

    def room(self) -> int:
        return 1 << 20

    def open_session(self, tags) -> _CountingSink:
        return self  # a listening source's connections at once: their bytes count together

    def close(self, error: str | None = None) -> None:
        pass

    def rate(self, started: float, ended: float) -> float:
        if self._first is not None and self._last_write > self._first[0]:
            since, counted = self._first
            return (self.bytes - counted) / (self._last_write - since)
        return self.bytes / max(ended - started, 1e-3)  # ended before halfway (end of data)


async def _probe(source, seconds: float) -> tuple[float | None, str]:
    connector = source.connector()
    started = time.monotonic()
    sink = _CountingSink(started, seconds)
    ended = "probed"
    try:
        await asyncio.wait_for(connector.run_session(sink, 0), seconds)
        ended = "probed until its end of data"
    except asyncio.TimeoutError:
        pass
    except Exception as error:  # noqa: BLE001 - any failure of a source is reported as its basis
        message = str(error) or type(error).__name__
        return None, f"probe failed: {message}"
    finally:
        await connector.close()
    elapsed = time.monotonic() - started
    return sink.rate(started, started + elapsed), (
        f"{ended}: {sink.bytes:,} bytes in {elapsed:.1f} s, rate over the second half"
    )


def _rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second * 8 / 1000:,.1f} kbit/s"


def _bytes(count: float) -> str:
    return f"{count / 1024:,.1f} KiB" if count >= 1024 else f"{count:,.0f} B"
