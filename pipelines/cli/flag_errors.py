"""Flag parsing for the binaries: a bad flag value is one `error:` line and exit code 2.

absl checks flag values when it parses them (`lower_bound`, enums, and the
validators each binary registers) and by default reports a failure as
"FATAL Flags parsing error" with exit code 1. The binaries pass
`parse_flags` to `app.run` instead, so a bad value is reported like their
other usage errors: one line a user can act on, exit code 2.
"""

from __future__ import annotations

import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (app.run's `flags_parser`); exits 2 with one line on a bad value."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        message = " ".join(str(error).split())
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
