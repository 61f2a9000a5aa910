"""Sizes and rates as users write them: exact values for the documented forms, None otherwise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtap.config.units import parse_rate, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("128kbit/s", 16_000), ("128 kb/s", 16_000), ("2 Mbit/s", 250_000), ("16kB/s", 16_000),
        ("1MB/s", 1_000_000), ("16KiB/s", 16_384), ("1.5Mbit/s", 187_500),
        ("1000 samples/s x 4 bytes", 4_000), ("50 samples/s × 8 B", 400), (5000, 5000),
    ],
)
def test_documented_rate_forms(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["fast", "²kbit/s", "128kbit", "-1kB/s", -1, float("nan"), True, "1e3B/s"])
def test_what_is_not_a_rate(text):
    assert parse_rate(text) is None


@pytest.mark.parametrize("text, expected", [("64KiB", 65536), ("1MB", 10**6), ("65536", 65536), ("2 gi", 2 * 2**30)])
def test_documented_size_forms(text, expected):
    assert parse_size(text) == expected


@given(st.text(max_size=40))
def test_any_text_is_a_finite_rate_or_none(text):
    rate = parse_rate(text)
    assert rate is None or (math.isfinite(rate) and rate >= 0)


@given(st.text(max_size=40))
def test_any_text_is_a_size_or_none(text):
    size = parse_size(text)
    assert size is None or (isinstance(size, int) and size >= 0)
