"""The website client (spec 2.2's web frontend), served by every worker.

The browser speaks the same binary protocol as every other client: frames of
docs/PROTOCOL.md carried in binary WebSocket messages (section 15 there). This
package holds the worker's HTTPS/WebSocket listener (``server.py``), the
WebSocket carriage that feeds the shared client handler (``carriage.py``),
the security headers (``headers.py``), the protocol tables the browser's
codec reads (``tables.py``) and the page itself (``static/``).
"""
