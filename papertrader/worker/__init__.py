"""The worker server (spec 3.2): the only server clients talk to.

Importing this package does not monkey-patch anything; ``pt worker run``
patches gevent first and then imports :mod:`papertrader.worker.main`.

    main.py              3.2.1 wiring, start and stop
    master_link.py       3.2.2 the persistent link to the master
    client_management.py 3.2.3 connected clients and their sessions
    auth_tunnel.py       3.2.4 login/register through the master
    cache.py             3.2.6 current quotes in process memory
    client_handler.py    the client port: admit or turn away, shed when refused
    client_connection.py one greenlet per client: reads, deadlines, the lean path
    client_requests.py   the answer of each request, by instruction (one table)
    orders.py            purchase/sell through the Redis order queue
"""
