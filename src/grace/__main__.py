"""``python -m grace ...``: the ``grace`` command (grace.cli)."""

import sys

from grace.cli import main

sys.exit(main())
