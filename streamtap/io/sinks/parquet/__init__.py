"""The Parquet sink: files per window and stream on local disk."""
