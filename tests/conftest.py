"""Shared fixtures: real services (Icecast, Kafka) come from the plugin modules in fixtures/."""

import pytest

pytest_plugins = ["tests.fixtures.icecast", "tests.fixtures.kafka", "tests.fixtures.flink",
                  "tests.fixtures.kinesis", "tests.fixtures.hdfs", "tests.fixtures.s3"]


@pytest.fixture(autouse=True)
def _fresh_stop_request():
    """A stop requested by one test's capture must not end the next one's streams."""
    from streamtap.io.hub import clear_stop

    clear_stop()
    yield
    clear_stop()
