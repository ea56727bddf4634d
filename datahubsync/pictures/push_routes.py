"""Task source ``push`` (seed 004): ``POST /api/v1/pictures/tasks``, acknowledged once durable.

Seed 004 answered "success" first and stored the task afterwards, in Redis
and MySQL, so a crash between the two lost it. Here the task and its files
are committed to the ledger (SQLite with ``synchronous=FULL``, or
PostgreSQL) *before* the 202 goes out; ``pictures run`` on the same ledger
takes it from there. A repeated ``task_id`` is acknowledged again and stored
once, so a sender may retry freely.

Body: ``{"task_id": str|int, "camera_id": str?, "time": ISO-8601?, "images":
[path or http(s) URL, ...]}``. Answers: 202 ``{"task_id", "files",
"duplicate"}``; 401 without a token of ``serve.api_tokens``; 413 over
``pictures.max_push_bytes``; 400 naming the field. ``GET
/api/v1/pictures/tasks/{task_id}`` shows a task's state and files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from datahubsync.core.auth import presented_token, token_matches
from datahubsync.core.config import LoadedConfig
from datahubsync.core.metrics import Metrics
from datahubsync.core.webbody import BodyError, read_json
from datahubsync.pictures.ledger import Ledger, NewTask, ledger_url
from datahubsync.pictures.paths import split_client_path
from datahubsync.pictures.transfer import is_url

PATH = "/api/v1/pictures/tasks"
MAX_IMAGES = 64
MAX_ID = 200


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


class PushApi:
    def __init__(self, loaded: LoadedConfig, metrics: Metrics) -> None:
        self.loaded = loaded
        self.tokens = tuple(loaded.config.serve.api_tokens)
        self.limit = loaded.config.pictures.max_push_bytes
        self.body_timeout = loaded.config.serve.body_timeout
        self.metrics = metrics
        self._ledger: Ledger | None = None

    def ledger(self) -> Ledger:
        if self._ledger is None:  # opened in the worker process, on first use
            self._ledger = Ledger(ledger_url(self.loaded.config.pictures.ledger_url,
                                             self.loaded.state_dir))
        return self._ledger

    def _refuse(self, status: int, reason: str, message: str, **extra: Any) -> web.Response:
        self.metrics.inc("datahubsync_picture_push_rejected_total", reason=reason)
        return web.json_response({"error": message, **extra}, status=status)

    async def receive(self, request: web.Request) -> web.Response:
        if not token_matches(presented_token(request.headers), self.tokens):
            return self._refuse(401, "auth", "invalid or missing token")
        try:
            task = validate(await read_json(request, self.limit, self.body_timeout))
        except BodyError as exc:
            reason = {413: "size", 408: "timeout"}.get(exc.status, "invalid")
            return self._refuse(exc.status, reason, str(exc), field="body")
        except Invalid as exc:
            return self._refuse(400, "invalid", str(exc), field=str(exc).split(":", 1)[0])
        added = await asyncio.to_thread(self.ledger().add_tasks, [task])
        self.metrics.inc("datahubsync_picture_push_tasks_total", duplicate=str(not added).lower())
        return web.json_response({"task_id": task.task_id, "files": len(task.images),
                                  "duplicate": not added}, status=202)

    async def show(self, request: web.Request) -> web.Response:
        if not token_matches(presented_token(request.headers), self.tokens):
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

    async def close(app: web.Application) -> None:
        if api._ledger is not None:
            api._ledger.close()

    app.on_cleanup.append(close)
