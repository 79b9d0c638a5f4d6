"""``python -m rrsis.cli``: the ``rrsis`` command (also how Lightning restarts it per process)."""

import sys

from rrsis.cli import main

sys.exit(main())
