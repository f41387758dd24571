"""One family for the errors a user can cause (a bad file, name, option, URL or image).

Every CLI catches :class:`UserError` by type and prints its message on one line with exit code 2
(:func:`run_cli`); anything else is a bug and keeps its traceback. Each module's own error class
(``ModelError``, ``FormatError``, ``ImageError``, ``TransportError`` ...) derives from it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: exit code of a CLI for an error the user can fix
USAGE_EXIT = 2


class UserError(Exception):
    """A problem with what the user gave us; the message says what and how to fix it."""


def run_cli(main: Callable[[], int]) -> int:
    """Run a CLI body: a :class:`UserError` becomes ``error: <message>`` and exit 2.

    Ctrl-C ends with exit 130 and no traceback.
    """
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
