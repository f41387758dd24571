"""One family for the errors a user can cause (a bad file, name, option, URL or image).

Every CLI catches :class:`UserError` by type and prints its message on one line with exit code 2
(:func:`run_cli`; 1 for a device that stopped answering, ``host.driver.LinkError``); anything else
is a bug and keeps its traceback. Each module's own error class
(``ModelError``, ``FormatError``, ``ImageError``, ``TransportError`` ...) derives from it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: exit code of a CLI for an error the user can fix
USAGE_EXIT = 2
#: exit code of a CLI whose device stopped answering (a dead board or link, not the user's input)
DEVICE_EXIT = 1


class UserError(Exception):
    """A problem with what the user gave us; the message says what and how to fix it."""

    #: what :func:`run_cli` exits with (a subclass for a dead device: :data:`DEVICE_EXIT`)
    exit_code = USAGE_EXIT


def run_cli(main: Callable[[], int]) -> int:
    """Run a CLI body: a :class:`UserError` becomes ``error: <message>`` and its
    ``exit_code`` (2; 1 for a device that stopped answering).

    Ctrl-C ends with exit 130 and no traceback.
    """
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
