"""``python -m clients``: see clients/cli.py."""

import sys

from clients.cli import main

sys.exit(main())
