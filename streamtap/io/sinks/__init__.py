"""Sink types: one package per system, each a SinkConfig, its write transform and its read-back."""
