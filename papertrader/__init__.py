"""PaperTrader: a paper-trading master/worker server (see the spec in docs/)."""

__version__ = "0.1.0"
