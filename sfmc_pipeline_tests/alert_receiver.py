"""A webhook on 127.0.0.1 for the alert tests: records each POST (path, content type, JSON body) and
answers with a chosen status, optionally a redirect (``Location``)."""

import http.server
import json
import threading

import pytest


class AlertReceiver(http.server.ThreadingHTTPServer):
    def __init__(self, status: int = 200, location: str | None = None, host: str = "127.0.0.1"):
        super().__init__((host, 0), _Handler)
        self.status = status
        self.location = location
        self.posts: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/hooks/T000/B000/abcdef"

    def texts(self) -> list[str]:
        return [post["json"]["text"] for post in self.posts]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """``start(status=200, location=None, host="127.0.0.1") -> AlertReceiver``, serving until the test ends."""
    servers = []

    def start(status=200, location=None, host="127.0.0.1"):
        server = AlertReceiver(status, location, host)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
