"""The restriction's bytes are what a Flink savepoint holds: versioned, and today's still decode."""

from __future__ import annotations

import pytest

from streamtap.io.group_restriction import GroupPosition, GroupPositionCoder
from streamtap.io.stream_state import StreamPosition

# Written by the unversioned coder of 0.1.0 (commit 2953714) for the group below.
UNVERSIONED_0_1_0 = bytes.fromhex(
    "80059528000000000000005d9428284b074a00c001004741dad274802000004e4e74944e284b004b004e4b0c4d"
    "00107494652e"
)
GROUP = GroupPosition(
    (
        StreamPosition(7, 114688, 1800000000.5, None, None),
        None,
        StreamPosition(0, 0, None, 12, 4096),
    )
)


def test_a_savepoint_of_0_1_0_still_decodes():
    assert GroupPositionCoder().decode(UNVERSIONED_0_1_0) == GROUP


def test_the_format_is_versioned_and_round_trips():
    coder = GroupPositionCoder()
    encoded = coder.encode(GROUP)
    assert encoded[0] == 1
    assert coder.decode(encoded) == GROUP


def test_positions_of_an_older_release_get_defaults_for_new_fields():
    import pickle

    older = b"\x01" + pickle.dumps([(3, 300)])  # a release whose positions had two fields
    assert GroupPositionCoder().decode(older) == GroupPosition((StreamPosition(3, 300),))


def test_a_newer_format_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="restore the savepoint with the release that wrote it"):
        GroupPositionCoder().decode(b"\x02" + b"anything")
