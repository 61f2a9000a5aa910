"""`python -m streamtap ...`: the `streamtap` command (streamtap.cli), for launchers that start
Python modules rather than console scripts."""

import sys

from streamtap.cli import main

if __name__ == "__main__":
    sys.exit(main())
