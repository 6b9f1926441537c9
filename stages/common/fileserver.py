"""A loopback HTTP server for a fixed set of local files.

img2dataset fetches over HTTP; serving local images this way sends them through the same download
path (timeouts, retries, error capture) as web images. Only the listed files are reachable.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote


class LoopbackFileServer:
    def __init__(self, paths: list[str]):
        self._paths = sorted(set(paths))
        self._index = {p: i for i, p in enumerate(self._paths)}
        self._server: ThreadingHTTPServer | None = None

    def url_for(self, path: str) -> str:
        assert self._server is not None, "server not started"
        name = quote(Path(path).name)  # cosmetic: URLs keep the file name (and so its suffix)
        return f"http://127.0.0.1:{self._server.server_address[1]}/{self._index[path]}/{name}"

    def __enter__(self) -> LoopbackFileServer:
        paths = self._paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    data = Path(paths[int(self.path.lstrip("/").split("/")[0])]).read_bytes()
                except (ValueError, IndexError, OSError) as e:
                    self.send_error(404, f"{type(e).__name__}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
