"""The ``pt`` command line: one click group per audience (see ``main.py``).

Installed as ``papertrader_cli``; imports inside are relative so that mapping works.
"""
