"""Other tools that scenario 4 (`alternatives`) runs against streamtap, built from source here."""
