"""``python -m nas_core``: the command line."""

import logging
import os
import sys

from nas_core.cli import main

code = main()
# Leave without the interpreter's teardown: with torch, MLflow and SQLAlchemy loaded it takes 1-3 s,
# and a Ctrl-C or SIGTERM must end the process within 2 s. Everything we wrote is already committed
# (SQLite, MLflow, output files); only the standard streams and log handlers still need a flush.
logging.shutdown()
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
os._exit(code)
