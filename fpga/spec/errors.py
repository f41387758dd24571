"""One family for the errors a user can cause (a bad file, name, option, URL or image).

Every CLI catches :class:`UserError` by type and prints its message on one line with exit code 2
(:func:`run_cli`; 1 for a device that stopped answering, ``host.driver.LinkError``); anything else
is a bug and keeps its traceback. Each module's own error class
(``ModelError``, ``FormatError``, ``ImageError``, ``TransportError`` ...) derives from it.
"""

from __future__ import annotations

import os
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


#: exit code of a CLI that Ctrl-C ended (128 + SIGINT, as a shell reports it)
INTERRUPTED_EXIT = 130


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
        return INTERRUPTED_EXIT


def exit_process(code: int) -> None:
    """End a CLI process with ``code``. After Ctrl-C (:data:`INTERRUPTED_EXIT`) the interpreter's
    finalization is skipped (``os._exit`` once stdout and stderr are flushed): the batch CLI has
    stopped Ray and its boards by then, and a CI run twice saw an interrupted batch print
    "interrupted" and then die with SIGSEGV while the interpreter shut down (native threads of
    the libraries it had loaded); there is nothing left for finalization to do."""
    if code == INTERRUPTED_EXIT:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more to say
                pass
        os._exit(code)
    sys.exit(code)
