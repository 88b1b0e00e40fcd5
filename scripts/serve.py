#!/usr/bin/env python3
"""Serves the demo page for local development and for the browser tests.

    python3 scripts/serve.py [PORT]      (default 8080; 0 picks a free port)

Routes: www/ at /, models/ at /models/, target/browser-fixtures/ at /fixtures/.
GET /__stats returns the request counts per path as JSON; POST /__stats/reset
clears them. The tests use the counts to prove that a model came from the
browser's Cache API and not from the network.

Every response says `Cache-Control: no-store`, so the only cache in play is the
one the page manages itself. A `?norange` query makes the server ignore Range
headers, as some servers do, so the page's fallback can be tested.
"""

import json
import mimetypes
import os
import re
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# URL prefix -> folder; the first matching prefix wins, so "/" goes last.
ROOTS = [
    ("/models/", os.path.join(REPO, "models")),
    ("/fixtures/", os.path.join(REPO, "target", "browser-fixtures")),
    ("/", os.path.join(REPO, "www")),
]

# Python's table depends on the machine's /etc/mime.types; a module script or a
# wasm file served with the wrong type is refused by the browser.
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".ts": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".gguf": "application/octet-stream",
}

CHUNK = 1 << 20
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Stats:
    """Requests per path and kind, shared by the server's threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}

    def count(self, path, kind):
        with self._lock:
            per_path = self._counts.setdefault(path, {})
            per_path[kind] = per_path.get(kind, 0) + 1

    def snapshot(self):
        with self._lock:
            return {path: dict(kinds) for path, kinds in self._counts.items()}

    def reset(self):
        with self._lock:
            self._counts.clear()


STATS = Stats()


class Handler(SimpleHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive; every response below sets Content-Length.
    protocol_version = "HTTP/1.1"
    quiet = False

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)

    def do_GET(self):
        self._serve(send_body=True)

    def do_HEAD(self):
        self._serve(send_body=False)

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == "/__stats/reset":
            STATS.reset()
            self._send_json({"reset": True})
        else:
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "POST is only for /__stats/reset")

    def _serve(self, send_body):
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == "/__stats":
            self._send_json(STATS.snapshot(), send_body)
            return

        file = self._resolve(path)
        if file is None:
            self._count(path, HTTPStatus.NOT_FOUND)
            self._send_error(HTTPStatus.NOT_FOUND, f"{path} not found")
            return

        size = os.path.getsize(file)
        honour_range = "norange" not in url.query.split("&")
        wanted = self.headers.get("Range") if honour_range else None
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if wanted is not None:
            parsed = parse_range(wanted, size)
            if parsed is None:
                self._count(path, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = parsed
            status = HTTPStatus.PARTIAL_CONTENT
        self._count(path, status)

        self.send_response(status)
        self.send_header("Content-Type", content_type(file))
        self.send_header("Content-Length", str(end - start + 1))
        if honour_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if send_body:
            self._send_file(file, start, end - start + 1)

    def _count(self, path, status):
        # "GET" counts every GET of the path; "GET 206" only those with that status.
        STATS.count(path, self.command)
        STATS.count(path, f"{self.command} {status.value}")

    def _resolve(self, path):
        for prefix, root in ROOTS:
            if path.startswith(prefix):
                relative = path[len(prefix):]
                if relative == "" or relative.endswith("/"):
                    relative += "index.html"
                file = os.path.realpath(os.path.join(root, relative))
                # realpath and this check keep "..", and links out of the root, unreachable
                root = os.path.realpath(root)
                inside = os.path.commonpath([file, root]) == root
                return file if inside and os.path.isfile(file) else None
        return None

    def _send_file(self, file, start, length):
        try:
            with open(file, "rb") as f:
                f.seek(start)
                while length > 0:
                    chunk = f.read(min(CHUNK, length))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    length -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            # The page cancels a download on purpose, e.g. after reading only
            # the header from a server that ignored its Range request.
            self.close_connection = True

    def _send_json(self, value, send_body=True):
        body = json.dumps(value, indent=1, sort_keys=True).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_error(self, status, message):
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def parse_range(header, size):
    """(start, end) inclusive for a single `bytes=` range, or None if unsatisfiable."""
    match = RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        # "bytes=-N": the last N bytes
        length = min(int(last), size)
        return (size - length, size - 1) if length > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end else None


def content_type(file):
    extension = os.path.splitext(file)[1].lower()
    return TYPES.get(extension) or mimetypes.guess_type(file)[0] or "application/octet-stream"


def main():
    args = [a for a in sys.argv[1:] if a != "--quiet"]
    Handler.quiet = "--quiet" in sys.argv[1:]
    port = int(args[0]) if args else 8080
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    # The tests read this line to learn the port when they pass 0.
    print(f"Serving {REPO} at http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
