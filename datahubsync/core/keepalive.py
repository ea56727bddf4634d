"""``KeepAlivePool``: the second HTTP client, ``http.client`` connections kept alive.

It lives apart from ``core.http`` (requests + tenacity) so that a command that
only moves pictures does not import requests: 0.05-0.1 s of every
``pictures once``'s start-up.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from datahubsync.core.threadconns import ThreadConnections

# A keep-alive connection the server closed while it sat idle fails in one of these ways
# on its next request: it is retried once on a fresh connection (GET and HEAD only).
STALE = (http.client.RemoteDisconnected, http.client.CannotSendRequest,
         http.client.ResponseNotReady, BrokenPipeError, ConnectionResetError)
ERROR_BODY_MAX = 64 * 1024  # an error page longer than this is not read: the connection goes


class KeepAlivePool(ThreadConnections[http.client.HTTPConnection]):
    """The second HTTP client: ``http.client`` connections kept alive, one per thread and
    server, for many small transfers where the client's CPU bounds the rate (a request
    cost 1.3 ms of CPU through requests, 0.5 ms through urllib3 and 0.2 ms here).

    Same rules as the requests path: every connection has a connect timeout and a read
    timeout, errors are described by :func:`describe_error`; the caller's schedule
    (a ledger's backoff) does the retrying, this pool only replaces a connection the
    server closed while idle, once.
    """

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ``netloc``, and whether it was open already (kept
        alive from an earlier request, so the server may have closed it meanwhile)."""
        conn = self._mine().get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.connect_timeout)
            elif scheme == "http":
                conn = http.client.HTTPConnection(netloc, timeout=self.connect_timeout)
            else:
                raise ValueError(f"not an http(s) URL: {scheme}://{netloc}")
            self._keep((scheme, netloc), conn)
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
