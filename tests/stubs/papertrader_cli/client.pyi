# See __init__.pyi.
from cli.client import client as client
