"""``KeepAlivePool``: the second HTTP client, ``http.client`` connections kept alive.

It lives apart from ``core.http`` (requests + tenacity) so that a command that
only moves pictures does not import requests: 0.05-0.1 s of every
``pictures once``'s start-up.
"""

from __future__ import annotations

import http.client
import threading
from urllib.parse import urlsplit

from datahubsync import __version__

# A keep-alive connection the server closed while it sat idle fails in one of these ways
# on its next request: it is retried once on a fresh connection (GET and HEAD only).
STALE = (http.client.RemoteDisconnected, http.client.CannotSendRequest,
         http.client.ResponseNotReady, BrokenPipeError, ConnectionResetError)
ERROR_BODY_MAX = 64 * 1024  # an error page longer than this is not read: the connection goes


class KeepAlivePool:
    """The second HTTP client: ``http.client`` connections kept alive, one per thread and
    server, for many small transfers where the client's CPU bounds the rate (a request
    cost 1.3 ms of CPU through requests, 0.5 ms through urllib3 and 0.2 ms here).

    Same rules as the requests path: every connection has a connect timeout and a read
    timeout, errors are described by :func:`describe_error`; the caller's schedule
    (a ledger's backoff) does the retrying, this pool only replaces a connection the
    server closed while idle, once.
    """

    def __init__(self, timeout: float, connect_timeout: float | None = None,
                 user_agent: str | None = None) -> None:
        self.timeout = timeout
        self.connect_timeout = min(10.0, timeout) if connect_timeout is None else connect_timeout
        self.user_agent = user_agent or f"datahubsync/{__version__}"
        self._local = threading.local()  # per thread: {(scheme, netloc): connection}
        self._guard = threading.Lock()
        self._all: set[http.client.HTTPConnection] = set()

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ``netloc``, and whether it was open already (kept
        alive from an earlier request, so the server may have closed it meanwhile)."""
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.connect_timeout)
            elif scheme == "http":
                conn = http.client.HTTPConnection(netloc, timeout=self.connect_timeout)
            else:
                raise ValueError(f"not an http(s) URL: {scheme}://{netloc}")
            conns[(scheme, netloc)] = conn
            with self._guard:
                self._all.add(conn)
        if conn.sock is not None:
            return conn, True
        conn.connect()
        conn.sock.settimeout(self.timeout)  # connect with the short timeout, read with this
        return conn, False

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request (a body only for requests that may be repeated: a connection the
        server closed while idle is retried once); the response is the caller's to read
        (or discard)."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": self.user_agent, **headers}
        while True:
            conn, reused = self._connection(parts.scheme, parts.netloc)
            try:
                conn.request(method, target, body=body, headers=headers)
                return conn, conn.getresponse()
            except STALE:
                conn.close()
                if not reused:  # a fresh connection failing is the server's answer
                    raise

    @staticmethod
    def discard(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Read a short error body so the connection can serve the next request."""
        body = response.read(ERROR_BODY_MAX + 1)
        if len(body) > ERROR_BODY_MAX or not response.isclosed():
            conn.close()

    def release_thread(self) -> None:
        """Close the calling thread's connections: a thread that ends must not leave them
        open for the life of the process (``pictures run`` starts new threads each pass)."""
        conns = getattr(self._local, "conns", {})
        with self._guard:
            for conn in conns.values():
                conn.close()
                self._all.discard(conn)
        conns.clear()

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
