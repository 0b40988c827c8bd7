"""``python -m rolora`` is the ``rolora`` command."""

import sys

from rolora.cli import main

sys.exit(main())
