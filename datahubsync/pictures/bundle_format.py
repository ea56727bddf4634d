r"""The picture bundle: many pictures in one ``POST /api/v1/pictures/bundle``.

With 200 KB pictures on a fast network the cost of a transfer is per
request, not per byte: aiohttp's request handling and the client's header
parsing took more CPU than moving the bytes. A client that has many files to
fetch from the same server asks for up to ``MAX_FILES`` of them at once.

Request (same tokens as ``/files``): a JSON body
``{"files": [{"path": "D:\\pic\\2025\\a.jpg", "have": 204800}, ...]}``, the
paths exactly as the task table stores them (the same mapping and
confinement as ``/files``), ``have`` optional: the size of a copy the client
already holds.

Answer 200, ``application/vnd.datahubsync.bundle``, the entries in the
order asked, each one line of JSON ending in ``\n``:

- ``{"size": N}`` followed by exactly N bytes of the file;
- ``{"same": true}``: the file has ``have`` bytes, nothing follows;
- ``{"missing": true}``: refused, missing or unreadable (what ``/files``
  answers with 404);
- ``{"large": true}``: more than ``MAX_BUNDLED_BYTES``; fetch it alone with
  ``GET /files/...``.

The size in a line is the file's size when the server opened it, and exactly
that many bytes follow. A file that shrinks before it is all sent cannot fill
its entry: the server then drops the connection, and the client keeps the
entries that came whole and fetches the rest one GET each.

400 for a body that is not of this form, 401 without a token, 413 for a body
over ``BODY_LIMIT``. An older ``serve`` answers 404 or 405 here: clients then
fetch one ``GET /files/...`` per picture.
"""

PATH = "/api/v1/pictures/bundle"
CONTENT_TYPE = "application/vnd.datahubsync.bundle"
MAX_FILES = 64  # entries per request
ENTRY_LINE_MAX = 4096  # bytes of an entry's line, its "\n" included
MAX_BUNDLED_BYTES = 16 * 1024 * 1024  # a larger file is answered {"large": true}
SAME = b'{"same": true}\n'
MISSING = b'{"missing": true}\n'
LARGE = b'{"large": true}\n'
