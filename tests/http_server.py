"""A loopback HTTP file server with byte ranges, for the remote-file tests.

The standard library's ``SimpleHTTPRequestHandler`` ignores ``Range`` headers; uproot
(through fsspec) reads ROOT files in byte ranges, so :class:`RangeHandler` answers
``Range: bytes=a-b`` (also ``a-`` and ``-n``) with ``206 Partial Content`` and a
``Content-Range`` header.  The server binds 127.0.0.1 on a free port and runs in a daemon
thread; use :func:`serve` as a context manager.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files under ``directory`` with single byte-range support; counts requests."""

    requests: list[str]

    def log_message(self, *args):  # quiet
        pass

    def end_headers(self):
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.requests.append(f"GET {self.path} {self.headers.get('Range', '')}".strip())
        match = _RANGE.match(self.headers.get("Range", "").replace(" ", ""))
        path = self.translate_path(self.path)
        first, last = match.groups() if match else ("", "")
        if first and last and int(last) - int(first) >= self.server.drop_size and self.server.drop_ranges > 0:
            self.server.drop_ranges -= 1  # a lost connection: closed without an answer
            self.close_connection = True
            return None
        if not match or not os.path.isfile(path):
            return super().do_GET()
        size = os.path.getsize(path)
        if first == "":          # suffix: the last n bytes
            first, last = max(size - int(last or 0), 0), size - 1
        else:
            first, last = int(first), min(int(last) if last else size - 1, size - 1)
        if first >= size or first > last:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with open(path, "rb") as fh:
            fh.seek(first)
            body = fh.read(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", self.date_time_string(int(os.stat(path).st_mtime)))
        self.end_headers()
        self.wfile.write(body)
        return None

    def do_HEAD(self):  # noqa: N802
        self.server.requests.append(f"HEAD {self.path}")
        return super().do_HEAD()


@contextmanager
def serve(directory):
    """Serve ``directory`` on ``http://127.0.0.1:<free port>``; yields the base URL."""
    handler = functools.partial(RangeHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.requests = []
    server.drop_ranges = 0          # set > 0: that many range requests of at least
    server.drop_size = 100_000      # drop_size bytes are answered by closing the connection
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
