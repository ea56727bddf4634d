"""Task source ``push``: pictures pushed to ``serve``, acknowledged only once stored.

Two bodies on ``POST /api/v1/pictures/tasks``:

- the existing sender's ("remote server 1"): ``{"photoUrl", "callTime",
  "cameraCode"}`` per picture, or a list of them. It carries no id: each
  picture gets the next integer id, assigned in the transaction that stores
  it (unique across every ``serve`` worker, never reused after a restart or a
  kill -9). The reply is ``success`` (text), sent only after the commit;
- ours: ``{"task_id": str|int, "camera_id"?, "time"?: ISO-8601, "images":
  [path or http(s) URL, ...]}``, answered 202 ``{"task_id", "files",
  "duplicate"}``; a repeated ``task_id`` is stored once, so a sender may retry.

The processing script reports its result back with ``call_back``: ``POST
/call_back`` (or ``/api/v1/pictures/call_back``) with ``id`` and ``numOfPeo``
as JSON, a form, or the query string; the result is stored, the task marked
processed, and ``pictures run`` reports it on to ``pictures.callback_url``
("remote server 2"), marking it reported only on a 2xx.

Refusals: 401 without a token of ``serve.api_tokens`` from outside
``serve.trusted_networks``, 413 over ``pictures.max_push_bytes``, 400 naming
the field. After each commit ``pictures run`` on this host is woken
(``core.wakeup``), so a pushed picture starts downloading at once instead of
at the next poll. ``GET /api/v1/pictures/tasks/{task_id}`` shows a task.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from datahubsync.core.auth import Access, access_for
from datahubsync.core.config import LoadedConfig
from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.metrics import Metrics
from datahubsync.core.wakeup import poke
from datahubsync.core.webbody import BodyError, read_json
from datahubsync.pictures.ledger import Ledger, NewTask, ledger_url
from datahubsync.pictures.paths import split_client_path
from datahubsync.pictures.transfer import is_url

PATH = "/api/v1/pictures/tasks"
STORED = CrashPoint("push.stored", "a pushed picture committed to the ledger, not answered")
CALL_BACK = ("/call_back", "/api/v1/pictures/call_back")
MAX_IMAGES = 64
MAX_ID = 200
MAX_PICTURES = 1000  # in one list of the existing sender's form
SEED_KEYS = ("photoUrl", "callTime", "cameraCode")


class Invalid(ValueError):
    """The body breaks the schema; the message starts with the field's name."""


def _text(doc: dict[str, Any], key: str, limit: int, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise Invalid(f"{key}: required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"{key}: must be a string")
    text = str(value).strip()
    if not text or len(text) > limit:
        raise Invalid(f"{key}: 1 to {limit} characters")
    return text


def validate(body: Any) -> NewTask:
    """The task a push body describes, or Invalid naming the bad field."""
    if not isinstance(body, dict):
        raise Invalid("body: must be a JSON object")
    unknown = sorted(set(body) - {"task_id", "camera_id", "time", "images"})
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown field")
    task_id = _text(body, "task_id", MAX_ID, required=True)
    camera = _text(body, "camera_id", MAX_ID)
    when = _text(body, "time", 40)
    if when is not None:
        try:
            dt.datetime.fromisoformat(when)
        except ValueError:
            raise Invalid("time: not an ISO-8601 time") from None
    images = body.get("images")
    if not isinstance(images, list) or not 1 <= len(images) <= MAX_IMAGES:
        raise Invalid(f"images: a list of 1 to {MAX_IMAGES} paths or URLs")
    for i, item in enumerate(images):
        if not isinstance(item, str) or not item or len(item) > 4096:
            raise Invalid(f"images[{i}]: a path or URL of at most 4096 characters")
        if not is_url(item) and split_client_path(item) is None:
            raise Invalid(f"images[{i}]: not an absolute path without '..' nor an http(s) URL")
    assert task_id is not None
    return NewTask(task_id, tuple(images), when, camera, "push")


def is_sender_form(body: Any) -> bool:
    """The existing sender's body (one picture, or a list), not ours."""
    first = body[0] if isinstance(body, list) and body else body
    return isinstance(first, dict) and "photoUrl" in first


def validate_sender(body: Any) -> list[NewTask]:
    """The pictures of the existing sender's body; Invalid naming the bad field.

    Keys other than ``photoUrl``, ``callTime`` and ``cameraCode`` are ignored: the
    sender's body is accepted as it is.
    """
    items = body if isinstance(body, list) else [body]
    if not 1 <= len(items) <= MAX_PICTURES:
        raise Invalid(f"body: 1 to {MAX_PICTURES} pictures")
    found = []
    for n, item in enumerate(items):
        where = f"[{n}]." if isinstance(body, list) else ""
        if not isinstance(item, dict):
            raise Invalid(f"body{where.rstrip('.')}: must be a JSON object")
        url = item.get("photoUrl")
        if not isinstance(url, str) or not is_url(url) or len(url) > 4096 or "\0" in url:
            raise Invalid(f"{where}photoUrl: an http(s) URL of at most 4096 characters")
        try:
            when = _text(item, "callTime", 40)
            camera = _text(item, "cameraCode", MAX_ID)
        except Invalid as exc:
            raise Invalid(f"{where}{exc}") from None
        found.append(NewTask("", (url,), when, camera, "sender"))
    return found


def call_back_fields(doc: Any) -> tuple[str, Any]:
    """``(id, numOfPeo)`` of a call_back; Invalid naming the bad field."""
    if not isinstance(doc, dict):
        raise Invalid("body: must be a JSON object (or a form) with id and numOfPeo")
    task_id = _text(doc, "id", MAX_ID, required=True)
    if "numOfPeo" not in doc:
        raise Invalid("numOfPeo: required")
    value = doc["numOfPeo"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) \
            or len(str(value)) > 64:
        raise Invalid("numOfPeo: a number or a short string")
    assert task_id is not None
    return task_id, value


class PushApi:
    def __init__(self, loaded: LoadedConfig, metrics: Metrics) -> None:
        self.loaded = loaded
        self.access: Access = access_for(loaded.config.serve)
        self.limit = loaded.config.pictures.max_push_bytes
        self.body_timeout = loaded.config.serve.body_timeout
        self.metrics = metrics
        self.wakeup = loaded.layout.pictures_wakeup
        self._ledger: Ledger | None = None

    def ledger(self) -> Ledger:
        if self._ledger is None:  # opened in the worker process, on first use
            self._ledger = Ledger(ledger_url(self.loaded.config.pictures.ledger_url,
                                             self.loaded.state_dir))
        return self._ledger

    def _refuse(self, status: int, reason: str, message: str, **extra: Any) -> web.Response:
        self.metrics.inc("datahubsync_picture_push_rejected_total", reason=reason)
        return web.json_response({"status": "error", "error": message, "message": message,
                                  **extra}, status=status)

    async def receive(self, request: web.Request) -> web.Response:
        if not self.access.allows(request):
            return self._refuse(401, "auth", "invalid or missing token")
        try:
            body = await read_json(request, self.limit, self.body_timeout)
            if is_sender_form(body):
                pictures = validate_sender(body)
                ids = await asyncio.to_thread(self.ledger().add_numbered, pictures)
                STORED.reached()
                self.metrics.inc("datahubsync_picture_push_tasks_total", len(ids),
                                 duplicate="false")
                poke(self.wakeup)
                return web.Response(text="success")
            task = validate(body)
        except BodyError as exc:
            reason = {413: "size", 408: "timeout"}.get(exc.status, "invalid")
            return self._refuse(exc.status, reason, str(exc), field="body")
        except Invalid as exc:
            return self._refuse(400, "invalid", str(exc), field=str(exc).split(":", 1)[0])
        added = await asyncio.to_thread(self.ledger().add_tasks, [task])
        STORED.reached()
        self.metrics.inc("datahubsync_picture_push_tasks_total", duplicate=str(not added).lower())
        if added:
            poke(self.wakeup)
        return web.json_response({"task_id": task.task_id, "files": len(task.images),
                                  "duplicate": not added}, status=202)

    async def call_back(self, request: web.Request) -> web.Response:
        """The processing script's result for one picture: stored, then reported on."""
        if not self.access.allows(request):
            return self._refuse(401, "auth", "invalid or missing token")
        try:
            fields: Any = dict(request.query)
            if request.method == "POST" and request.can_read_body:
                kind = request.content_type
                if kind == "application/x-www-form-urlencoded":
                    fields.update(await request.post())
                else:
                    fields.update(await read_json(request, self.limit, self.body_timeout))
            task_id, value = call_back_fields(fields)
        except BodyError as exc:
            return self._refuse(exc.status, "invalid", str(exc), field="body")
        except (Invalid, TypeError, ValueError) as exc:
            return self._refuse(400, "invalid", str(exc), field=str(exc).split(":", 1)[0])
        before = await asyncio.to_thread(self.ledger().set_result, task_id,
                                         {"numOfPeo": value})
        if before is None:
            return self._refuse(404, "unknown", f"no picture {task_id!r}")
        poke(self.wakeup)
        return web.Response(text="success")

    async def show(self, request: web.Request) -> web.Response:
        if not self.access.allows(request):
            return self._refuse(401, "auth", "invalid or missing token")
        task_id = request.match_info["task_id"]
        if not 0 < len(task_id) <= MAX_ID or "\0" in task_id:
            return web.json_response({"error": "no such task"}, status=404)
        ledger = self.ledger()
        info = await asyncio.to_thread(ledger.task_info, task_id)
        if info is None:
            return web.json_response({"error": "no such task"}, status=404)
        files = await asyncio.to_thread(ledger.task_files, task_id)
        return web.json_response({**info, "files": [
            {"index": i, "remote": r, "state": s} for i, r, s in files]})


def setup(app: web.Application, loaded: LoadedConfig, metrics: Metrics) -> None:
    """Mount the push API when ``pictures.source`` is ``push``."""
    if loaded.config.pictures.source != "push":
        return
    api = PushApi(loaded, metrics)
    metrics.describe("datahubsync_picture_push_tasks_total", "counter",
                     "Picture tasks received (duplicate=true: already in the ledger)")
    metrics.describe("datahubsync_picture_push_rejected_total", "counter",
                     "Picture task pushes refused, by reason")
    app.router.add_post(PATH, api.receive)
    app.router.add_get(PATH + "/{task_id}", api.show)
    for path in CALL_BACK:
        app.router.add_post(path, api.call_back)
        app.router.add_get(path, api.call_back)

    async def close(app: web.Application) -> None:
        if api._ledger is not None:
            api._ledger.close()

    app.on_cleanup.append(close)
