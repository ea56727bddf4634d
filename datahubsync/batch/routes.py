"""The batch API of ``serve``: the existing front-end's routes and replies, exactly.

The front-end calls these with plain ``curl`` and reads the envelope:

- ``POST /api/v1/sync-status/sync/batch {"start_date", "end_date"}`` →
  200 ``{"status": "success", "data": {"task_id", "total_days", "message"}}``;
- ``GET /api/v1/sync-status/sync/batch/progress/{task_id}`` → 200
  ``{"status": "success", "data": {status, total, current, success, failed,
  skipped, current_date, message, progress_percent, start_time, end_time,
  duration_seconds, estimated_completion, errors}}`` (``data.status`` is the
  task's state; the top-level ``status`` only says the request succeeded);
- a refusal → ``{"status": "error", "message": "..."}`` with 400 (bad dates),
  401 (no token, from outside ``serve.trusted_networks``), 404, 409 (a task
  is already running on that target) or 503; fields of ours go in ``data``.

The front-end sends no credentials: clients in ``serve.trusted_networks``
(loopback by default) need none, every other one a token from
``serve.api_tokens``. A started task runs as ``datahubsync batch resume
TASK_ID`` in a process of its own, so a restart of ``serve`` neither kills nor
forgets it; the POST answers once that process holds the target's lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from datahubsync.batch.calendar import parse_day
from datahubsync.batch.runner import BatchService
from datahubsync.core.auth import Access, access_for
from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError, ExitCode, UsageError
from datahubsync.core.selfexec import self_argv
from datahubsync.core.webbody import BodyError, read_json

log = logging.getLogger(__name__)
PREFIX = "/api/v1/sync-status/sync/batch"
MAX_BODY = 16 * 1024
START_WAIT = 20.0  # seconds the POST waits for the job process to take its lock


@dataclass
class BatchApi:
    """The batch routes' handlers."""

    loaded: LoadedConfig
    service: BatchService
    access: Access

    # -- helpers --------------------------------------------------------------
    def _authorised(self, request: web.Request) -> None:
        if not self.access.allows(request):
            raise web.HTTPUnauthorized(
                text=json.dumps({"status": "error", "message": "unauthorized: send "
                                 "Authorization: Bearer <token> (from outside "
                                 "serve.trusted_networks)"}),
                content_type="application/json", headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _error(status: int, message: str, **extra: Any) -> web.Response:
        doc: dict[str, Any] = {"status": "error", "message": message}
        if extra:
            doc["data"] = extra
        return web.json_response(doc, status=status)

    @staticmethod
    def _success(data: Any, status: int = 200) -> web.Response:
        return web.json_response({"status": "success", "data": data}, status=status)

    def _log_path(self, task_id: str) -> Path:
        return self.service.store.directory.parent / "logs" / f"{task_id}.log"

    # -- routes ---------------------------------------------------------------
    async def start(self, request: web.Request) -> web.Response:
        self._authorised(request)
        try:
            body = await read_json(request, MAX_BODY, self.loaded.config.serve.body_timeout)
        except BodyError as exc:
            return self._error(exc.status, str(exc), field="body")
        if not isinstance(body, dict):
            return self._error(400, "body: expected a JSON object", field="body")
        try:
            for name in ("start_date", "end_date"):
                if not isinstance(body.get(name), str):
                    raise UsageError(f"{name}: required, a date as YYYY-MM-DD")
            if body.get("job") is not None and not isinstance(body["job"], str):
                raise UsageError("job: must be a string")
            start = parse_day(body["start_date"], "start_date")
            end = parse_day(body["end_date"], "end_date")
            plan = await asyncio.to_thread(self.service.plan, body.get("job"), start, end)
        except UsageError as exc:
            message = str(exc)
            return self._error(400, message, field=message.split(":", 1)[0])
        except ConfigError as exc:
            return self._error(503, f"server configuration: {exc}")
        doc = await asyncio.to_thread(self.service.create, plan)
        return await self._launch(doc)

    async def _launch(self, doc: dict[str, Any]) -> web.Response:
        task_id = doc["task_id"]
        argv = self_argv()
        if self.loaded.source is not None:
            argv += ["--config", str(self.loaded.source)]
        argv += ["batch", "resume", "--start", task_id]
        log_path = self._log_path(task_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            # Not asyncio's subprocess: its transport kills a running child when the
            # loop closes, and a server restart must not kill the job.
            child = await asyncio.to_thread(
                subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, env={**os.environ, "NOTIFY_SOCKET": ""})
        threading.Thread(target=child.wait, name=f"reap-{child.pid}", daemon=True).start()
        log.info("batch task %s started (pid %d, log %s)", task_id, child.pid, log_path)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if child.poll() is not None and child.returncode != 0:
                return await self._refused(doc, child.returncode, log_path)
            current = await asyncio.to_thread(self.service.store.load, task_id)
            if current["status"] != "pending":
                return self._success(self._accepted(current))
            await asyncio.sleep(0.05)
        current = await asyncio.to_thread(self.service.store.load, task_id)
        return self._success(self._accepted(current))

    @staticmethod
    def _accepted(doc: dict[str, Any]) -> dict[str, Any]:
        message = f"batch task started: {doc['total']} days to sync"
        return {"task_id": doc["task_id"], "total_days": doc["total"], "message": message}

    async def _refused(self, doc: dict[str, Any], code: int, log_path: Path) -> web.Response:
        reason = _last_error(log_path) or f"the job process exited with status {code}"
        if code == ExitCode.TEMPFAIL:
            await asyncio.to_thread(self.service.store.path(doc["task_id"]).unlink,
                                    missing_ok=True)
            return self._error(409, reason)
        await asyncio.to_thread(self.service.store.save,
                                dict(doc, status="failed", message=reason))
        return self._error(503, reason, task_id=doc["task_id"])

    async def progress(self, request: web.Request) -> web.Response:
        self._authorised(request)
        doc = await self._load(request.match_info["task_id"])
        return self._success(doc)

    async def cancel(self, request: web.Request) -> web.Response:
        self._authorised(request)
        await self._load(request.match_info["task_id"])
        doc = await asyncio.to_thread(self.service.cancel, request.match_info["task_id"])
        return self._success(doc)

    async def history(self, request: web.Request) -> web.Response:
        self._authorised(request)
        try:
            limit = int(request.query.get("limit", "50"))
            if limit < 1:
                raise ValueError
        except ValueError:
            return self._error(400, "limit: expected a positive integer", field="limit")
        tasks = await asyncio.to_thread(self.service.history, limit)
        return self._success({"tasks": tasks})

    async def _load(self, task_id: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self.service.store.load, task_id)
        except UsageError:
            raise web.HTTPNotFound(text=json.dumps({"status": "error",
                                                    "message": f"no batch task {task_id!r}"}),
                                   content_type="application/json") from None


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return ""


def setup(app: web.Application, loaded: LoadedConfig) -> BatchApi:
    """Mount the batch routes; without ``serve.api_tokens`` they answer 401 to everyone."""
    api = BatchApi(loaded, BatchService(loaded), access_for(loaded.config.serve))
    if not api.access.tokens and not api.access.trusted and loaded.config.batch.jobs:
        log.warning("serve.api_tokens and serve.trusted_networks are empty: the batch API "
                    "refuses every request")
    app.router.add_post(PREFIX, api.start)
    app.router.add_get(PREFIX, api.history)
    app.router.add_get(PREFIX + "/progress/{task_id}", api.progress)
    app.router.add_post(PREFIX + "/{task_id}/cancel", api.cancel)
    return api
