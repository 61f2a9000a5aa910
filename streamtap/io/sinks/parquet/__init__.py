"""The Parquet sink: files per event-time window (and stream, or of many streams) on local disk,
HDFS or S3.

- `config.py`: ParquetSink: every option, its checks, the plug-in hooks
- `write.py`: WriteChunksToParquet: the per-stream writing DoFns (per bundle, per window)
- `many_streams.py`: the writing DoFn of `layout: many_streams` (a window of every stream in
  files of about the target size)
- `writing.py`: what both share: the DoFn base (thread pool, file queue, counts), one file
- `publishing.py`: a bundle's files renamed in order; a full disk retried, failures in one line
- `read.py`: capture_files, read_parquet_chunks, capture_ends: a capture of either layout read
  back, lazily
- `plan.py`: bytes and files a day for `streamtap plan`
- `storage.py`: every file-system operation (names, fsync, publish by rename, stale temporaries;
  HDFS and S3 through `streamtap.io.storage`)
- `format.py`: the schema and tables of chunks, in memory
- `writer_processes.py`: helper processes for many small files (`python -m` this module)

This file imports nothing: the helper processes start through it and must not load Beam.
"""
