# The tests import the command line as it installs, ``papertrader_cli`` (setup.py maps
# it onto the ``cli/`` folder). mypy cannot follow that mapping (an editable install is
# an import hook), so these stubs re-export, from ``cli`` (which mypy checks as source),
# the names the tests import: add a name here when a test imports a new one.
