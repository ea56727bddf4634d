"""The batch API of ``serve`` (the seed's routes, now persisted and cancellable).

``POST /api/v1/sync-status/sync/batch`` plans the task, writes its progress
document and starts ``datahubsync batch resume TASK_ID`` as a process of its
own (own session: the server stays responsive, and a server restart neither
kills nor forgets it). The answer waits until that process holds the target's
lock: 202 with the task id, or 409 naming the task already running there.
Progress, history and cancel read and write the same documents as the CLI.
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
from datahubsync.core.auth import presented_token, token_matches
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
    tokens: list[str]

    # -- helpers --------------------------------------------------------------
    def _authorised(self, request: web.Request) -> None:
        if not token_matches(presented_token(request.headers), self.tokens):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "unauthorized: send Authorization: Bearer <token>"}),
                content_type="application/json", headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _error(status: int, message: str, **extra: Any) -> web.Response:
        return web.json_response({"status": "error", "error": message, **extra}, status=status)

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
            return self._error(500, f"server configuration: {exc}")
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
                return web.json_response(self._accepted(current), status=202)
            await asyncio.sleep(0.05)
        current = await asyncio.to_thread(self.service.store.load, task_id)
        return web.json_response(self._accepted(current), status=202)

    @staticmethod
    def _accepted(doc: dict[str, Any]) -> dict[str, Any]:
        message = f"batch task started: {doc['total']} days"
        data = {"task_id": doc["task_id"], "total_days": doc["total"], "message": message}
        return {"status": "success", **data, "data": data}

    async def _refused(self, doc: dict[str, Any], code: int, log_path: Path) -> web.Response:
        reason = _last_error(log_path) or f"the job process exited with status {code}"
        if code == ExitCode.TEMPFAIL:
            await asyncio.to_thread(self.service.store.path(doc["task_id"]).unlink,
                                    missing_ok=True)
            return self._error(409, reason)
        await asyncio.to_thread(self.service.store.save,
                                dict(doc, status="failed", message=reason))
        return self._error(500, reason, task_id=doc["task_id"])

    async def progress(self, request: web.Request) -> web.Response:
        self._authorised(request)
        doc = await self._load(request.match_info["task_id"])
        return web.json_response({**doc, "data": doc})

    async def cancel(self, request: web.Request) -> web.Response:
        self._authorised(request)
        await self._load(request.match_info["task_id"])
        doc = await asyncio.to_thread(self.service.cancel, request.match_info["task_id"])
        return web.json_response({**doc, "data": doc}, status=202)

    async def history(self, request: web.Request) -> web.Response:
        self._authorised(request)
        try:
            limit = int(request.query.get("limit", "50"))
            if limit < 1:
                raise ValueError
        except ValueError:
            return self._error(400, "limit: expected a positive integer", field="limit")
        tasks = await asyncio.to_thread(self.service.history, limit)
        return web.json_response({"tasks": tasks, "data": tasks})

    async def _load(self, task_id: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self.service.store.load, task_id)
        except UsageError:
            raise web.HTTPNotFound(text=json.dumps({"status": "error",
                                                    "error": f"no batch task {task_id!r}"}),
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
    api = BatchApi(loaded, BatchService(loaded), list(loaded.config.serve.api_tokens))
    if not api.tokens and loaded.config.batch.jobs:
        log.warning("serve.api_tokens is empty: the batch API refuses every request")
    app.router.add_post(PREFIX, api.start)
    app.router.add_get(PREFIX, api.history)
    app.router.add_get(PREFIX + "/progress/{task_id}", api.progress)
    app.router.add_post(PREFIX + "/{task_id}/cancel", api.cancel)
    return api
