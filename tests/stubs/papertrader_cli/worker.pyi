# See __init__.pyi.
from cli.worker import worker as worker
