"""The master server (spec 3.1): accounts, worker links, market data and the order drain.

Start it with ``pt master run`` or, from Python, :func:`run_master` (blocks
until SIGTERM/SIGINT) or :class:`Master` (``start()`` / ``stop()``) in a
gevent-patched process.
"""
