"""The page's files, read once at start and served from memory.

The whole front end is a few hundred kilobytes of plain files (HTML, CSS,
JavaScript modules, the vendored chart library), so the worker reads them
when it starts, with a strong ETag each (a hash of the content) and a gzip
copy for the larger text files, and never touches the disk per request.
``/js/protocol/tables.js`` is not a file: it is generated from the Python
protocol tables (``tables.py``); nor is ``/config.json``, what the page needs
to know of its worker (``page_config`` in ``server.py``). Only these files exist: a request for
anything else is a 404, whatever dots or slashes it holds.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from papertrader.web.tables import PATH as TABLES_PATH
from papertrader.web.tables import tables_js

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = "/index.html"
#: Files smaller than this are not worth compressing.
GZIP_MIN = 1024

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


def entry(body: bytes, suffix: str) -> StaticFile:
    content_type = CONTENT_TYPES[suffix]
    compressible = content_type.startswith(("text/", "application/", "image/svg"))
    gzipped = gzip.compress(body, 9, mtime=0) if compressible and len(body) >= GZIP_MIN else None
    digest = hashlib.sha256(body).hexdigest()[:32]
    return StaticFile(body, gzipped, content_type, f'"{digest}"')


class StaticFiles:
    """Every servable file by its URL path."""

    def __init__(self, root: Path = STATIC_DIR, generated: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, StaticFile] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in CONTENT_TYPES and not path.name.startswith("."):
                url = "/" + path.relative_to(root).as_posix()
                self.files[url] = entry(path.read_bytes(), path.suffix)
        self.files[TABLES_PATH] = entry(tables_js().encode("utf-8"), ".js")
        for url, body in (generated or {}).items():  # e.g. /config.json, made by the worker
            self.files[url] = entry(body, Path(url).suffix)
        if INDEX not in self.files:
            raise FileNotFoundError(f"{root / 'index.html'} is missing: the package is incomplete")

    entry = staticmethod(entry)

    def lookup(self, path: str) -> StaticFile | None:
        """The file for a request path ("/" is the page), or None."""
        if path == "/" or path == "":
            path = INDEX
        return self.files.get(path)

    @property
    def total_bytes(self) -> int:
        return sum(len(f.body) for f in self.files.values())
