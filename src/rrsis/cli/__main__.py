"""``python -m rrsis.cli``: the ``rrsis`` command without its console script."""

import sys

from rrsis.cli import main

sys.exit(main())
