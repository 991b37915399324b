"""The subcommands of ``python -m export`` (train, list, mobile), one module each.

Each module has ``register(subparsers)`` and keeps its heavy imports inside its ``run``, so
building the parser (``--help``, a typo) costs no TensorFlow import; see ``export/cli.py``.
Commands parse, print and map outcomes to exit statuses; the work lives in the rest of
``export`` (``pipeline``, ``mobile``, ``repository``). Never imports ``serving`` or ``clients``.
"""
