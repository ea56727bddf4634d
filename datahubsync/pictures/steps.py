"""Step (3) of a pass: tasks whose files are all settled go through ``process_command``
(argv template; JSON on stdout is the result) and are reported to ``callback_url``
("remote server 2", reported only on a 2xx). A failed step is retried
``retry_after`` later and given up after ``give_up_after``; a result the
processing script reported itself through ``call_back`` is never overwritten.
"""

from __future__ import annotations

import json
import logging
import subprocess
from typing import Any

from datahubsync.pictures.ledger import Ledger
from datahubsync.pictures.result import PassResult
from datahubsync.pictures.transfer import UnsafePath, local_path

log = logging.getLogger("datahubsync.pictures")


class Steps:
    """Processing and reporting, on one ledger."""

    def __init__(self, cfg: Any, ledger: Ledger) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self._session: Any = None

    def run(self, result: PassResult) -> None:
        """Every due step: processing of downloaded tasks, then their reports."""
        cfg = self.cfg
        if cfg.process_command:
            for task_id, _attempts in self.ledger.due_tasks("downloaded"):
                self._process(task_id, result)
        elif cfg.callback_url:
            for task_id, _attempts in self.ledger.due_tasks("downloaded"):
                self.ledger.step_done(task_id, "processed", {"files": self._files(task_id)})
        if cfg.callback_url:
            for task_id, _attempts in self.ledger.due_tasks("processed"):
                self._callback(task_id, result)

    def _files(self, task_id: str) -> list[dict[str, Any]]:
        found = []
        for idx, remote, state in self.ledger.task_files(task_id):
            try:
                local = str(local_path(self.cfg.local_root, remote))
            except UnsafePath:
                local = None
            found.append({"index": idx, "remote": remote, "state": state, "local": local})
        return found

    def _process(self, task_id: str, result: PassResult) -> None:
        cfg = self.cfg
        info = self.ledger.task_info(task_id) or {}
        present = [f["local"] for f in self._files(task_id) if f["state"] == "downloaded"]
        values = {"task_id": task_id, "camera_id": info.get("camera_id") or "",
                  "created_time": info.get("created_time") or "",
                  "local_root": str(cfg.local_root)}
        argv: list[str] = []
        for arg in cfg.process_command or []:
            if arg == "{files}":
                argv.extend(present)
            else:
                argv.append(arg.format(**values))
        try:
            done = subprocess.run(argv, capture_output=True, timeout=cfg.process_timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self._step_failed(task_id, f"process_command timed out after "
                                       f"{cfg.process_timeout:g}s", result)
            return
        except OSError as exc:
            self._step_failed(task_id, f"process_command: {exc}", result)
            return
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
            self._step_failed(task_id, f"process_command exited {done.returncode}: {tail}",
                              result)
            return
        text = done.stdout.decode("utf-8", "replace").strip()
        try:
            output: Any = json.loads(text) if text else None
        except ValueError:
            output = text[:4000]
        # a result the processing script reported through call_back meanwhile stays
        self.ledger.step_done(task_id, "processed", {"output": output},
                              from_state="downloaded")
        result.processed += 1

    def _report_body(self, task_id: str) -> dict[str, Any]:
        """What ``callback_url`` gets: for a picture of the existing sender, the fields it
        sent with its id and the script's ``numOfPeo``; for other tasks ours."""
        info = self.ledger.task_info(task_id) or {}
        found = json.loads(info["result"]) if info.get("result") else None
        if info.get("source") == "sender":
            files = self.ledger.task_files(task_id)
            return {"id": int(task_id), "photoUrl": files[0][1] if files else None,
                    "cameraCode": info.get("camera_id"), "callTime": info.get("created_time"),
                    "numOfPeo": found.get("numOfPeo") if isinstance(found, dict) else None}
        return {"task_id": task_id, "camera_id": info.get("camera_id"),
                "created_time": info.get("created_time"), "result": found,
                "files": self._files(task_id)}

    def _callback(self, task_id: str, result: PassResult) -> None:
        from datahubsync.core.http import post_json

        problem = post_json(self.session(), self.cfg.callback_url or "",
                            self._report_body(task_id), headers=self.cfg.callback_headers,
                            timeout=(10, self.cfg.timeout))
        if problem:
            self._step_failed(task_id, f"callback: {problem}", result)
            return
        self.ledger.step_done(task_id, "reported")
        result.reported += 1

    def session(self) -> Any:
        if self._session is None:
            from datahubsync.core.http import make_session

            self._session = make_session()
        return self._session

    def _step_failed(self, task_id: str, error: str, result: PassResult) -> None:
        log.warning("task %s: %s; retried in %gs", task_id, error, self.cfg.retry_after)
        result.step_failures += 1
        if len(result.errors) < 10:
            result.errors.append(f"task {task_id}: {error}")
        self.ledger.step_failed(task_id, error, self.cfg.retry_after, self.cfg.give_up_after)

