"""``python -m nas_core`` and the ``moca`` console script: the command line."""

import logging
import os
import sys
from typing import NoReturn


def run() -> NoReturn:
    """Run the command line and leave without the interpreter's teardown."""
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
