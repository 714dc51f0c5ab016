"""One module per ``perfsuite`` subcommand, each with ``register(subparsers)``; see ``perfsuite.cli``."""
