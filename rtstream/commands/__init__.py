"""Subcommands of the ``rtstream`` CLI, one module each (see :mod:`rtstream.cli`)."""
