"""nnlab's errors, and the one place where a command turns them into a line on stderr and an exit code.

Library code raises and never exits. Every `python -m nnlab.<tool>` runs its `main(argv)` through
`command`: an NnlabError (a mistake or event the person can act on) becomes `nnlab: <message>` on
stderr and exit 1; an Interrupted (Ctrl-C or SIGTERM, taken at a step boundary) becomes its message,
which says how to continue, and exit 1. Anything else is a bug and keeps its traceback.
"""
import sys
from collections.abc import Callable


class NnlabError(Exception):
    """What the person running nnlab can fix or act on; the message names it and the fix in one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run or sweep at a step boundary; the message says how to continue.
    A KeyboardInterrupt, so that no `except Exception` (Hydra's job runner, a sweep's guard) takes it
    for a failed job: it ends the command."""


def call(main: Callable[[list[str]], object], argv: list[str]) -> int:
    """main(argv) as the command runs it: 0, or 1 with its one line on stderr (or argparse's own code)."""
    try:
        main(argv)
    except (NnlabError, Interrupted) as e:
        message = str(e) or "interrupted"
        print(message if message.startswith("nnlab: ") else f"nnlab: {message}", file=sys.stderr, flush=True)
        return 1
    except SystemExit as e:  # argparse's --help (0) and its usage errors (2), which print their own text
        return e.code if isinstance(e.code, int) else 1
    return 0


def command(main: Callable[[list[str]], object]) -> None:
    """The `if __name__ == "__main__"` of every nnlab tool: its exit code is `call`'s."""
    sys.exit(call(main, sys.argv[1:]))
