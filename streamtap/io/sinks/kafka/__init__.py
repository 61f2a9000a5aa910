"""The Kafka sink: one record per chunk, key = stream id, metadata in headers."""
