"""``python -m papertrader_cli``: the ``pt`` command (how the stack starts its servers)."""

from .main import main

main()
