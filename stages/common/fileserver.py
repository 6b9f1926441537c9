"""A loopback HTTP server for a fixed set of sources (local paths or URLs), each GET answered by `fetch`.

img2dataset fetches over HTTP with urllib, whose timeout bounds each socket read, not a whole response
(https://github.com/rom1504/img2dataset/issues/437): a server that drips bytes stalls it forever. ingest
therefore hands img2dataset only this server's URLs; the server fetches the real source through
`stages.common.fetch.fetch_one` (a total time budget per URL) and answers with the bytes, or with 502 and the
reason kept in `errors`. Local files go the same way. Only the listed sources are reachable.
"""
from __future__ import annotations

import posixpath
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, urlparse

from stages.common.fetch import Fetched


class LoopbackServer:
    def __init__(self, sources: list[str], fetch: Callable[[str], Fetched]):
        self._sources = sorted(set(sources))
        self._index = {s: i for i, s in enumerate(self._sources)}
        self._fetch = fetch
        self._server: ThreadingHTTPServer | None = None
        self.errors: dict[str, str] = {}  # source -> why its last GET got no bytes

    def url_for(self, source: str) -> str:
        assert self._server is not None, "server not started"
        name = quote(posixpath.basename(urlparse(source).path))  # cosmetic: URLs keep the file name
        return f"http://127.0.0.1:{self._server.server_address[1]}/{self._index[source]}/{name}"

    def __enter__(self) -> LoopbackServer:
        sources, fetch, errors = self._sources, self._fetch, self.errors

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    source = sources[int(self.path.lstrip("/").split("/")[0])]
                except (ValueError, IndexError):
                    self.send_error(404)
                    return
                result = fetch(source)
                if result.data is None:
                    errors[source] = result.error or "download failed: no reason given"
                    self.send_error(502)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(result.data)))
                self.end_headers()
                self.wfile.write(result.data)

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
