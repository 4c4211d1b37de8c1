"""Which packages the wheel holds; everything else is in pyproject.toml.

The ``cli/`` folder is the ``pt`` command (the design keeps it at the top of
the tree) but installs as ``papertrader_cli``: a top-level package called
``cli`` would collide with anything else of that name in a virtualenv.
pyproject.toml's declarative ``packages.find`` cannot rename a folder while
still discovering new ``papertrader`` subpackages, hence these few lines.
"""

from setuptools import find_namespace_packages, setup

setup(
    # Namespace discovery: the data folders (migrations, the sample CSV) are packages too.
    packages=[
        *find_namespace_packages(include=["papertrader*"], exclude=["*.__pycache__"]),
        "papertrader_cli",
    ],
    package_dir={"papertrader_cli": "cli"},
)
