"""The capture's Parquet files as independent readers see them: Spark 3.5 (its own SQL CLI, in a
JVM, reading hdfs:// from a real HDFS) and DuckDB (a local capture) read the documented schema
and Hive partitions, and the rows they return are the bytes sent, byte-exact, with their CRC-32C.

Each layout of the sink is a (sink keys, partition columns) pair in LAYOUTS: every reader reads
a capture of each, and the checks take the layout's partition columns. Spark reads everything in
one JVM (the `spark_reads` fixture). Numeric stream ids (partition values that readers take for
numbers) stay the ids with the settings README gives.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from datetime import datetime, timezone
from itertools import accumulate

import duckdb
import pytest

from streamtap.chunk import crc32c
from streamtap.io.sinks.parquet.format import SCHEMA
from tests.fixtures.hdfs import unique_hdfs_path
from tests.fixtures.spark_sql import spark_sql
from tests.helpers import TcpFeeder, capture
from tests.io.sinks.parquet.test_remote import _capture_tcp_and_http, _config

# Sink keys of each layout, and the Hive partition columns of its directories, outermost first.
LAYOUTS = {
    "per_stream": ({}, ("stream", "date")),
    "many_streams": ({"layout": "many_streams"}, ("date",)),
}

# The types of the columns, as each reader names them: the data columns of SCHEMA (crc32c is a
# Parquet UINT_32: Spark 3.2+ reads it as bigint, DuckDB as UINTEGER) and the partition columns.
SPARK_TYPES = {
    "stream_id": "string", "session": "string", "seq": "bigint", "offset": "bigint",
    "payload": "binary", "event_time": "timestamp", "crc32c": "bigint",
    "discontinuity": "boolean", "tags": "map<string,string>",
    "stream": "string", "date": "date",
}
DUCKDB_TYPES = {
    "stream_id": "VARCHAR", "session": "VARCHAR", "seq": "BIGINT", "offset": "BIGINT",
    "payload": "BLOB", "event_time": "TIMESTAMP WITH TIME ZONE", "crc32c": "UINTEGER",
    "discontinuity": "BOOLEAN", "tags": "MAP(VARCHAR, VARCHAR)",
    "stream": "VARCHAR", "date": "DATE",
}
# The columns every check reads, in this order, then the partition columns.
COLUMNS = ("stream_id", "seq", "offset", "payload", "crc32c", "event_us")


def _sent() -> dict[str, bytes]:
    """What the capture's two streams send: "tcp1" a TCP source, "web1" an HTTP one (ids that
    are not numbers, dates or booleans, so no reader takes the partition for anything but a
    string)."""
    return {"tcp1": os.urandom(300_000), "web1": os.urandom(200_000)}


def _capture(location: str, sent: dict[str, bytes], sink: dict) -> None:
    """A capture of `sent` into `location`, with more sink keys `sink` (a layout's)."""
    _capture_tcp_and_http(location, sent["tcp1"], sent["web1"], **sink)


def _capture_tcp(location: str, sent: dict[str, bytes], sink: dict) -> None:
    """A capture of `sent` ({stream id: bytes}), each stream a TCP source, into `location`."""
    with ExitStack() as feeders:
        sources = [
            feeders.enter_context(TcpFeeder(data, piece=16384, pause=0.02)).source(
                stream, max_bytes=len(data))
            for stream, data in sent.items()
        ]
        capture(_config(location, sources, **sink))


def _assert_rows_are_the_bytes_sent(
    rows: list[dict], sent: dict[str, bytes], partitions: tuple[str, ...], what: str
) -> None:
    """`rows` (dicts of COLUMNS and `partitions`, payloads as bytes, partition values as text),
    as a reader returned them ordered by (stream_id, seq), are the streams of `sent`: per stream
    seq 0, 1, ... without a hole or a repeat, offsets contiguous, each crc32c the CRC-32C of its
    payload, the payloads in seq order the bytes sent, and each partition value the row's
    stream and the UTC date of its event time. `what` (reader, layout) names the failure."""
    assert [row["stream_id"] for row in rows] == sorted(row["stream_id"] for row in rows), what
    assert sorted({row["stream_id"] for row in rows}) == sorted(sent), what
    for stream, data in sent.items():
        mine = [row for row in rows if row["stream_id"] == stream]
        payloads = [row["payload"] for row in mine]
        where = f"{what}: stream {stream}"
        assert [row["seq"] for row in mine] == list(range(len(mine))), where
        assert [row["offset"] for row in mine] == [0, *accumulate(map(len, payloads[:-1]))], where
        assert [row["crc32c"] for row in mine] == [crc32c(payload) for payload in payloads], where
        assert b"".join(payloads) == data, f"{where}: the payloads are not the bytes sent"
        for row in mine:
            day = datetime.fromtimestamp(row["event_us"] / 1e6, timezone.utc).date().isoformat()
            expected = {"stream": stream, "date": day}
            assert {name: row[name] for name in partitions} == {
                name: expected[name] for name in partitions
            }, f"{where}, seq {row['seq']}"
    # Unsigned: about half the checksums are >= 2**31, which a signed int32 would turn negative.
    assert any(row["crc32c"] >= 2**31 for row in rows), what


def _spark_select(view: str, partitions: tuple[str, ...]) -> str:
    """Spark SQL selecting COLUMNS and `partitions` of `view`, ordered by (stream_id, seq).
    Payloads in hex, not base64: Spark 3.5.2+ breaks base64() lines every 76 characters."""
    columns = ["stream_id", "seq", "offset", "hex(payload)", "crc32c",
               "unix_micros(event_time)", *partitions]
    return f"SELECT {', '.join(columns)} FROM {view} ORDER BY stream_id, seq"


def _spark_rows(selected: list[list[str]], partitions: tuple[str, ...]) -> list[dict]:
    """The rows of a _spark_select() as dicts of Python values (partition values as text)."""
    rows = [dict(zip((*COLUMNS, *partitions), row, strict=True)) for row in selected]
    for row in rows:
        row.update(seq=int(row["seq"]), offset=int(row["offset"]), crc32c=int(row["crc32c"]),
                   event_us=int(row["event_us"]), payload=bytes.fromhex(row["payload"]))
    return rows


def _numeric_statements(location: str) -> list[str]:
    """Spark reads of a capture with numeric stream ids: as Spark infers the partitions, with a
    schema, and with the inference off. Last in a JVM: the SET holds for every later view."""
    view = f"USING parquet OPTIONS (path '{location}')"
    typed = ", ".join(f"`{name}` {SPARK_TYPES[name]}" for name in (*SCHEMA.names, "stream", "date"))
    return [
        f"CREATE TEMPORARY VIEW inferred {view}",
        f"CREATE TEMPORARY VIEW typed ({typed}) {view}",
        "SET spark.sql.sources.partitionColumnTypeInference.enabled=false",
        f"CREATE TEMPORARY VIEW uninferred {view}",
        *(_DISTINCT_IDS.format(name) for name in ("inferred", "typed", "uninferred")),
        _spark_select("typed", ("stream", "date")),
    ]


_DISTINCT_IDS = "SELECT DISTINCT typeof(stream), stream, stream_id, typeof(date) FROM {} ORDER BY 3"
NUMERIC_IDS = ("0042", "7")


@pytest.fixture(scope="module")
def spark_reads(hdfs, tmp_path_factory) -> dict[str, tuple[str, dict[str, bytes], list]]:
    """Every Spark read of this module, in one JVM (a start costs ~8 s): {name: (location, bytes
    sent per stream, the results of its statements)} for a capture on HDFS per layout (named by
    the layout) and a local capture of NUMERIC_IDS ("numeric ids")."""
    work = tmp_path_factory.mktemp("spark-reads")
    plans = {}
    for layout, (sink, partitions) in LAYOUTS.items():
        location = f"{hdfs.url}{unique_hdfs_path('spark-reads')}"
        sent = _sent()
        _capture(location, sent, sink)
        plans[layout] = (location, sent, [
            f"CREATE TEMPORARY VIEW {layout} USING parquet OPTIONS (path '{location}')",
            f"DESCRIBE {layout}",
            _spark_select(layout, partitions),
        ])
    location = str(work / "numeric-ids")
    sent = {stream: os.urandom(60_000) for stream in NUMERIC_IDS}
    _capture_tcp(location, sent, {})
    plans["numeric ids"] = (location, sent, _numeric_statements(location))

    results = iter(spark_sql([line for *_, lines in plans.values() for line in lines], work))
    return {
        name: (location, sent, [next(results) for _ in lines])
        for name, (location, sent, lines) in plans.items()
    }


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_spark_reads_a_capture_on_hdfs_with_the_documented_schema_and_the_bytes_sent(
    spark_reads, layout
):
    _, sent, (_, described, selected) = spark_reads[layout]
    partitions = LAYOUTS[layout][1]

    # Data columns in the file's order, then the partition columns in the directories' order.
    assert [row[:2] for row in described] == [
        [name, SPARK_TYPES[name]] for name in (*SCHEMA.names, *partitions)
    ]
    rows = _spark_rows(selected, partitions)
    _assert_rows_are_the_bytes_sent(rows, sent, partitions, f"Spark, {layout}")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_duckdb_reads_a_local_capture_with_the_documented_schema_and_the_bytes_sent(
    tmp_path, layout
):
    sink, partitions = LAYOUTS[layout]
    root = tmp_path / "capture"
    sent = _sent()
    _capture(str(root), sent, sink)

    columns = [
        "stream_id", "seq", '"offset"', "payload", "crc32c", "epoch_us(event_time)",
        *(f"CAST({name} AS VARCHAR)" for name in partitions),
    ]
    files = f"read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    with duckdb.connect() as db:
        described = db.execute(f"DESCRIBE SELECT * FROM {files}").fetchall()
        selected = db.execute(
            f"SELECT {', '.join(columns)} FROM {files} ORDER BY stream_id, seq"
        ).fetchall()

    assert {name: kind for name, kind, *_ in described} == {
        name: DUCKDB_TYPES[name] for name in (*SCHEMA.names, *partitions)
    }
    rows = [dict(zip((*COLUMNS, *partitions), row, strict=True)) for row in selected]
    _assert_rows_are_the_bytes_sent(rows, sent, partitions, f"DuckDB, {layout}")


def test_numeric_stream_ids_stay_the_stream_ids_with_a_schema_or_without_type_inference(
    spark_reads,
):
    """What README tells users of numeric stream ids: Spark infers partition types, so stream=0042
    reads as the int 42, unless the view has a schema or the inference is off (which makes
    `date` a string too); DuckDB keeps `stream` a string with hive_types."""
    location, sent, results = spark_reads["numeric ids"]
    inferred, typed, uninferred, selected = results[4:]

    assert inferred == [["int", "42", "0042", "date"], ["int", "7", "7", "date"]]
    assert typed == [["string", "0042", "0042", "date"], ["string", "7", "7", "date"]]
    assert uninferred == [["string", "0042", "0042", "string"], ["string", "7", "7", "string"]]
    rows = _spark_rows(selected, ("stream", "date"))
    _assert_rows_are_the_bytes_sent(rows, sent, ("stream", "date"), "Spark, numeric ids")

    files = (
        f"read_parquet('{location}/**/*.parquet', hive_partitioning = true, "
        "hive_types = {'stream': VARCHAR})"
    )
    with duckdb.connect() as db:
        kept = db.execute(_DISTINCT_IDS.format(files)).fetchall()
    assert kept == [("VARCHAR", "0042", "0042", "DATE"), ("VARCHAR", "7", "7", "DATE")]
