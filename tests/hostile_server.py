"""A loopback HTTP server (127.0.0.1, ephemeral port) with endpoints that never let a fetch finish.

  /drip/<name>   200 and headers at once, then one byte every 0.5 s until the client goes away
  /loop/<name>   302 to itself, forever
  /ok/<name>     the bytes registered for <name>
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DRIP_INTERVAL_S = 0.5


@dataclass
class Hostile:
    base: str
    stop: threading.Event
    drips: dict[str, int] = field(default_factory=lambda: {"open": 0, "started": 0})
    loops: int = 0  # /loop/ requests answered
    lock: threading.Condition = field(default_factory=threading.Condition)

    def url(self, kind: str, name: str) -> str:
        return f"{self.base}/{kind}/{name}"

    def wait_no_open_drip(self, timeout: float) -> bool:
        """True once every dripping response has ended (the client hung up)."""
        with self.lock:
            return self.lock.wait_for(lambda: self.drips["open"] == 0, timeout)


def _handler(files: dict[str, bytes], state: Hostile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            _, kind, name = self.path.split("/", 2)
            if kind == "loop":
                with state.lock:
                    state.loops += 1
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif kind == "drip":
                self._drip()
            elif kind == "ok" and name in files:
                self.send_response(200)
                self.send_header("Content-Length", str(len(files[name])))
                self.end_headers()
                self.wfile.write(files[name])
            else:
                self.send_error(404)

        def _drip(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            with state.lock:
                state.drips["open"] += 1
                state.drips["started"] += 1
            try:
                while not state.stop.wait(DRIP_INTERVAL_S):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            except OSError:  # the client hung up: what a bounded fetch must do
                pass
            finally:
                with state.lock:
                    state.drips["open"] -= 1
                    state.lock.notify_all()
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def hostile_server(files: dict[str, bytes]) -> Iterator[Hostile]:
    """Serve until the block ends; then stop every drip and close the server."""
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Hostile(base=f"http://127.0.0.1:{server.server_address[1]}", stop=stop)
    server.RequestHandlerClass = _handler(files, state)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join()
