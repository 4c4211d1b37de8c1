# See __init__.pyi.
from cli.main import cli as cli
from cli.main import main as main
