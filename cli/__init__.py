"""The ``pt`` command line: one click group per audience (see ``cli.main``)."""
