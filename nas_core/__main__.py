"""``python -m nas_core`` and the ``moca`` console script: the command line."""

import logging
import os
import signal
import sys
from typing import Any, NoReturn


def _while_importing(signum: int, _frame: Any) -> None:
    """A Ctrl-C or SIGTERM while the command line is still importing (a second or more on a busy machine): nothing has
    been started or written yet, so leave at once with one line instead of a KeyboardInterrupt traceback."""
    os.write(2, f"{signal.Signals(signum).name} while starting up: exiting; nothing was started\n".encode())
    os._exit(128 + signum)


def run() -> NoReturn:
    """Run the command line and leave without the interpreter's teardown."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # started ignoring it (nohup): keep it that way
            signal.signal(sig, _while_importing)  # until the command installs its own handlers (cli._Signals)
    from nas_core.cli import main

    code = main()
    # With torch, MLflow and SQLAlchemy loaded the teardown takes 1-3 s, and a Ctrl-C or SIGTERM must end the
    # process within 2 s. Everything we wrote is already committed (SQLite, MLflow, output files); only the
    # standard streams and log handlers still need a flush.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
