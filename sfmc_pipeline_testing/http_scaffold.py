"""The HTTP scaffolding both fake servers share (fake SFMC in ``sfmc_server``, fake Salesforce org in
``salesforce_server``).  It has no API of its own; each fake describes its contract in its own docstring.

What is here:

* :class:`FakeServerBase`, the base class of a fake: the ``start``/``stop`` lifecycle (``127.0.0.1``, an ephemeral
  port, ``serve_forever`` in a background daemon thread), the context manager, ``port`` and ``base_url``; the
  state lock ``_lock``; ``latency`` (seconds every request waits before it is handled, outside the lock, so
  concurrent requests wait together); ``in_flight`` / ``max_in_flight`` / :meth:`~FakeServerBase.reset_max_in_flight`;
  and the recording of the fake's own unexpected exceptions (``errors``).  A fake implements
  ``_handle(method, target, headers, body)``, which returns its response object or ``None`` to drop the connection
  without a byte of response, and may override ``_encode_response`` (its response object -> status, headers, payload)
  and ``_protocol_error_response`` (its body for protocol-level errors, such as an unsupported method).
* :class:`TrackingHTTPServer`: a ``ThreadingHTTPServer`` with one daemon thread per connection that tracks the
  threads (joined on stop) and the open connections (shut down on stop, so idle keep-alive connections do not hold
  the stop up), keeps tracebacks off stderr and hands unexpected exceptions to the fake.
* :class:`FakeRequestHandler`: HTTP/1.1 keep-alive, ``TCP_NODELAY``, no stderr logging; reads the body
  (``Content-Length`` or chunked), sends ``GET``/``POST``/``PUT``/``PATCH``/``DELETE`` to the fake's ``_handle``
  and writes the response (``Connection: close`` once the fake is stopping).
* :class:`Response`: a response as it goes on the wire (status, body bytes, header list).
* :class:`Fault` and :class:`FaultQueue`: the injected faults (``fail_next``, ``drop_connection_next``...), first in
  first out; a request consumes the first queued fault that matches its path.

Only the standard library is used.
"""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeServerBase", "TrackingHTTPServer", "FakeRequestHandler", "Response", "Fault", "FaultQueue"]


@dataclass
class Response:
    """A response as it goes on the wire: ``Content-Length`` is added when it is written."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]


@dataclass
class Fault:
    """One injected fault: ``kind`` is the fake's own (``"drop"`` closes the connection in both fakes)."""

    kind: str
    path_contains: str
    remaining: int
    """Requests it still applies to."""
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def matches(self, path: str, query: Any = None) -> bool:
        """Whether a request for ``path`` (with ``query``, for subclasses that look at it) consumes this fault."""
        return self.path_contains in path


class FaultQueue:
    """Injected faults, first in first out.  Not locked itself: use it under the fake's lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue ``fault``; ``ValueError`` unless it applies to at least one request."""
        if fault.remaining < 1:
            raise ValueError("times must be >= 1")
        self._faults.append(fault)

    def take(self, path: str, query: Any = None) -> Fault | None:
        """The first queued fault that matches the request, counted down (and dropped once used up); else None."""
        for index, fault in enumerate(self._faults):
            if fault.matches(path, query):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[index]
                return fault
        return None

    def clear(self) -> None:
        """Forget every queued fault."""
        self._faults.clear()

    @property
    def pending(self) -> int:
        """Requests the queued faults still apply to (the sum of their ``remaining``)."""
        return sum(f.remaining for f in self._faults)


class TrackingHTTPServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer on ``127.0.0.1:0`` that tracks open connections so ``stop()`` can close keep-alive
    sockets, and its handler threads so ``stop()`` can join them."""

    # Handler threads are daemons (a forgotten stop() never blocks interpreter exit), and since
    # socketserver does not join daemon threads, they are tracked and joined here instead.
    daemon_threads = True
    # Clients connecting at once (concurrent page reads, sync threads) must not overflow the listen backlog
    # (socketserver's default is 5), or one of them waits a second for a SYN retry.
    request_queue_size = 64

    def __init__(self, fake: "FakeServerBase", handler_class: type["FakeRequestHandler"]):
        self.fake = fake
        self._open_connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler_class)

    def process_request(self, request, client_address):  # runs in the serve_forever thread
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True,
            name=f"{self.fake._thread_name}-conn-{self.server_address[1]}",
        )
        with self._conn_lock:
            self._open_connections.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(thread)
        thread.start()

    def join_handler_threads(self, timeout: float = 10.0) -> None:
        with self._conn_lock:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(timeout)

    def shutdown_request(self, request):
        with self._conn_lock:
            self._open_connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._open_connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):  # silence tracebacks on stderr
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, self.fake._quiet_handler_errors):
            self.fake._record_internal_error(exc)


class FakeRequestHandler(http.server.BaseHTTPRequestHandler):
    """Reads a request, hands it to ``server.fake._handle`` and writes what that returns."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs (requests.Session reuses connections)
    server_version = "FakeHTTP/1.0"
    # Headers and body go out as separate writes: without TCP_NODELAY each keep-alive response
    # would wait ~40 ms for the client's delayed ACK, which real servers do not make you pay.
    disable_nagle_algorithm = True
    sys_version = ""
    timeout = 30  # idle keep-alive connections give up eventually even if stop() is never called

    server: TrackingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (malformed request line, unsupported method) in the fake's own format, if it has
        one (``_protocol_error_response``), else the standard library's HTML page."""
        response = self.server.fake._protocol_error_response(code, message)
        if response is None:
            super().send_error(code, message, explain)
            return
        self.close_connection = True
        self.write_response(*self.server.fake._encode_response(response))

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def read_body(self) -> bytes:
        """The request body: ``Content-Length`` bytes, or the chunks of a chunked one."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        # In flight from its arrival until its answer starts: within the time the client waits for
        # it, so the fake never counts more requests at once than the client has outstanding.
        fake._request_started()
        answered = False
        try:
            body = self.read_body()
            if fake.latency > 0:
                time.sleep(fake.latency)  # outside the fake's lock: concurrent requests wait together
            response = fake._handle(self.command, self.path, self.headers, body)
            fake._request_finished()
            answered = True
            if response is None:  # injected connection drop: close without a single byte of response
                self.close_connection = True
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.write_response(*fake._encode_response(response))
        finally:
            if not answered:
                fake._request_finished()

    def write_response(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        """Send ``status``, ``headers`` as given (in order, ``Content-Length`` included) and ``payload``."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.server.fake._stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()


class FakeServerBase:
    """Lifecycle, latency, in-flight counters and internal-error recording of a fake HTTP server.

    Subclasses call ``super().__init__(latency=...)`` first, set ``_handler_class`` (a :class:`FakeRequestHandler`
    subclass) and ``_thread_name``, and implement ``_handle``.
    """

    _handler_class: type[FakeRequestHandler] = FakeRequestHandler
    _thread_name = "fake-http"
    """Prefix of the thread names: ``{name}-{port}`` serves, ``{name}-conn-{port}`` handles one connection."""
    _quiet_handler_errors: tuple[type[BaseException], ...] = ()
    """Exceptions escaping a handler that are not recorded as internal errors (e.g. ``OSError``: a client gone)."""

    def __init__(self, *, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.latency = float(latency)
        self._lock = threading.RLock()  # guards the fake's state
        self._errors: list[BaseException] = []
        self._flight_lock = threading.Lock()
        self._in_flight = 0
        self._max_in_flight = 0
        self._httpd: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self):
        """Bind ``127.0.0.1:0`` and serve in a background thread.  Returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._stopping = False
        self._httpd = TrackingHTTPServer(self, self._handler_class)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=f"{self._thread_name}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open (keep-alive) connection and join all server threads.

        Idempotent.  After ``stop()`` the recorded requests and state remain inspectable.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping = True
        httpd.shutdown()  # stops serve_forever; no new connections are accepted afterwards
        httpd.close_open_connections()  # unblock handler threads waiting on keep-alive reads
        httpd.server_close()  # closes the listening socket
        httpd.join_handler_threads()
        if thread is not None:
            thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    def __enter__(self):
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (only after ``start()``)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    # -- in-flight requests and internal errors ---------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests being served right now: arrived, their answer not yet begun (so never more than
        the client has outstanding; ``latency`` is spent in flight)."""
        with self._flight_lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests served at the same time since start (or :meth:`reset_max_in_flight`, or since it was
        set, e.g. to 0 to measure a phase)."""
        with self._flight_lock:
            return self._max_in_flight

    @max_in_flight.setter
    def max_in_flight(self, value: int) -> None:
        with self._flight_lock:
            self._max_in_flight = value

    def reset_max_in_flight(self) -> None:
        """Start counting ``max_in_flight`` again from the requests in flight now."""
        with self._flight_lock:
            self._max_in_flight = self._in_flight

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised inside the fake itself (bugs in the fake; should stay empty)."""
        with self._lock:
            return list(self._errors)

    def _request_started(self) -> None:
        with self._flight_lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _request_finished(self) -> None:
        with self._flight_lock:
            self._in_flight -= 1

    def _record_internal_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    # -- what a fake implements -------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: Any, body: bytes) -> Any:
        """Answer one request (``headers``: the ``http.client.HTTPMessage``); ``None`` drops the connection."""
        raise NotImplementedError

    def _encode_response(self, response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        """A response of ``_handle`` as status, headers (``Content-Length`` included) and payload."""
        return response.status, [*response.headers, ("Content-Length", str(len(response.body)))], response.body

    def _protocol_error_response(self, code: int, message: str | None) -> Any:
        """The response to a protocol-level error (``None``: the standard library's HTML error page)."""
        return None
