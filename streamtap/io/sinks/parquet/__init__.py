"""The Parquet sink: files per event-time window and stream on local disk, HDFS or S3.

- `config.py`: ParquetSink: every option, its checks, the plug-in hooks
- `write.py`: WriteChunksToParquet: the writing DoFns (per bundle, per window)
- `publishing.py`: a bundle's files renamed in order; a full disk retried, failures in one line
- `read.py`: capture_files, read_parquet_chunks, capture_end: a capture read back, lazily
- `plan.py`: bytes and files a day for `streamtap plan`
- `storage.py`: every file-system operation (names, fsync, publish by rename, stale temporaries;
  HDFS and S3 through `streamtap.io.storage`)
- `format.py`: the schema and tables of chunks, in memory
- `writer_processes.py`: helper processes for many small files (`python -m` this module)

This file imports nothing: the helper processes start through it and must not load Beam.
"""
