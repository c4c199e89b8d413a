"""``python -m nas_core``: the command line."""

from nas_core.cli import main

raise SystemExit(main())
