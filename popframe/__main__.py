"""``python -m popframe``: the ``popframe`` admin command."""

import sys

from popframe.cli import main

sys.exit(main())
