"""``python -m export.mobile`` is the same command as ``python -m export mobile``."""

import sys

from export.commands.mobile import main

sys.exit(main())
