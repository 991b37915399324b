"""``python -m serving``: see serving.cli."""

import sys

from serving.cli import main

sys.exit(main())
