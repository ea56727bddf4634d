"""``datasets publish --to s3://BUCKET/PREFIX``: the static tree, mirrored to object storage.

The tree is the one ``publish --out`` writes (built locally first, in ``--out`` or
a directory under the state directory, which also keeps the package store that
incremental builds and deltas need). Then, so that a reader never sees a half
state:

1. every object but the catalog: each version's own package, manifest and deltas
   first (new keys, which no catalog names yet), then the fixed names the existing
   clients read (``package/NAME.zip``, ``manifest/NAME.json``) and ``health``;
2. the catalog ``api/datasets``, last: readers move to the new version only now,
   and everything it names is already there, whole (an object appears only when
   its PUT, or its multipart upload, completes);
3. only then the objects no longer in the tree, except those the previous
   catalog named (a reader that fetched it a moment ago still finds its version).

Incremental: an object already there with the same size and sha256 (stored in its
``x-amz-meta-sha256``) is not uploaded again, and one with the same content as an
object this run already has (the fixed name of a new package) is copied inside
the storage. A publish killed at any point leaves the previous catalog, and all it
names, in place; the next publish aborts the unfinished multipart uploads under
the prefix and carries on. One publisher per prefix (the lock is local).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import ConfigError, UsageError
from datahubsync.core.http import RetryPolicy
from datahubsync.core.statefile import write_json_atomic

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024  # objects this large go up in parts ...
PART_SIZE = 16 * 1024 * 1024  # ... of this size (more when 10 000 parts would not do)
MAX_PARTS = 10_000
COPY_MAX = 5 * 1024**3  # the largest object S3 copies in one request
CATALOG = "api/datasets"
STALE_SPACES = ("package/", "manifest/", "delta/")  # where stale objects are removed
DIGESTS = ".s3-digests.json"  # in the local tree: sha256 per file, keyed by its identity
IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "no-cache"

OBJECT_UPLOADED = CrashPoint("s3.object_uploaded", "one more object of the new version "
                             "stored (the catalog still names the previous version)")
PART_UPLOADED = CrashPoint("s3.part_uploaded", "one more part of a multipart upload stored, "
                           "the upload not completed")
CATALOG_WRITTEN = CrashPoint("s3.catalog_written", "the new catalog stored; objects no "
                             "longer named not yet removed")
STALE_DELETED = CrashPoint("s3.stale_deleted", "one object no catalog names any more removed")


@dataclass
class UploadReport:
    """What one publish did to the bucket (the ``upload`` of ``publish --json``)."""

    to: str
    uploaded: list[str] = field(default_factory=list)  # tree paths sent (PUT or multipart)
    copied: list[str] = field(default_factory=list)  # copied inside the storage
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    aborted_uploads: int = 0
    bytes_uploaded: int = 0
    requests: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _File:
    path: str  # tree path, '/'-separated
    local: Path
    size: int
    sha256: str


def staging_dir(loaded: LoadedConfig, url: str) -> Path:
    """Where ``--to URL`` keeps its local tree when no ``--out`` is given."""
    from datahubsync.core.s3url import S3Location

    location = S3Location.parse(url)
    tag = hashlib.sha256(location.url.encode()).hexdigest()[:10]
    return loaded.state_dir / "publish" / f"{location.bucket}-{tag}"


def _rank(path: str) -> int:
    """Upload order: a version's own objects, the fixed names, health, the catalog."""
    if path == CATALOG:
        return 3
    if path == "health":
        return 2
    parts = path.split("/")
    return 1 if parts[0] in ("package", "manifest") and len(parts) == 2 else 0


def _headers(item: _File) -> dict[str, str]:
    json_like = item.path in (CATALOG, "health") or item.path.endswith(".json")
    return {
        "Content-Type": "application/json" if json_like else "application/zip",
        "Cache-Control": IMMUTABLE if _rank(item.path) == 0 else MUTABLE,
        "x-amz-meta-sha256": item.sha256,
    }


def _tree(out: Path) -> list[_File]:
    """The files of the tree (dot-names, such as ``.store``, stay local), in upload order;
    sha256 cached by file identity (the tree's files are links to immutable store files)."""
    from datahubsync.core.s3 import file_sha256

    cache_path = out / DIGESTS
    try:
        cache = json.loads(cache_path.read_text("utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, Any] = {}
    found = []
    for root, dirs, files in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            local = Path(root) / name
            rel = local.relative_to(out).as_posix()
            st = local.stat()
            identity = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
            known = cache.get(rel)
            if isinstance(known, list) and known[:4] == identity and len(known) == 5:
                sha = known[4]
            else:
                sha = file_sha256(local)
            fresh[rel] = [*identity, sha]
            found.append(_File(rel, local, st.st_size, sha))
    write_json_atomic(cache_path, fresh)
    return sorted(found, key=lambda f: (_rank(f.path), f.path))


def _named_by(document: Any) -> set[str]:
    """The tree paths a catalog names (packages, manifests, deltas)."""
    named: set[str] = set()
    entries = document.get("datasets") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        for key in ("package", "manifest"):
            if isinstance(entry.get(key), str):
                named.add(entry[key])
        if isinstance(entry.get("name"), str):
            named.add(f"package/{entry['name']}.zip")
        for delta in entry.get("deltas") or []:
            if isinstance(delta, dict) and isinstance(delta.get("path"), str):
                named.add(delta["path"])
    return named


def _same_catalog(old: Any, new: Any) -> bool:
    """Equal but for ``generated_at``: nothing for readers to move to."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    return {k: v for k, v in old.items() if k != "generated_at"} == \
        {k: v for k, v in new.items() if k != "generated_at"}


def _parse(body: bytes | None) -> Any:
    if body is None:
        return None
    from datahubsync.core.jsonsafe import parse_json

    try:
        return parse_json(body, "the bucket's catalog")
    except ValueError:
        return None


def publish_to_s3(loaded: LoadedConfig, url: str, out: Path, force: bool = False,
                  environ: Mapping[str, str] | None = None) -> tuple[Any, UploadReport]:
    """Build the tree in ``out`` (as ``publish --out``) and mirror it to ``url``."""
    from datahubsync.core.s3 import S3Client, resolve_settings
    from datahubsync.core.s3url import S3Location
    from datahubsync.datasets.publish import publish

    try:
        location = S3Location.parse(url)
    except ValueError as exc:
        raise UsageError(f"--to {url}: {exc}") from None
    settings = resolve_settings(loaded.config.s3, os.environ if environ is None else environ)
    if not settings.signed:
        raise ConfigError(f"--to {location.url}: publishing needs credentials: set "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or s3.access_key_id "
                          "and DATAHUBSYNC_S3__SECRET_ACCESS_KEY)")
    hub = loaded.config.hub
    policy = RetryPolicy(attempts=hub.retries)
    report = UploadReport(location.url)
    with S3Client(location, settings, policy, (hub.connect_timeout, hub.timeout)) as client:
        client.check_bucket()  # wrong credentials or bucket: exit 2 before building anything
        built = publish(loaded, out, force)
        _mirror(client, location, out, report)
        report.requests = dict(sorted(client.counters.requests.items()))
    return built, report


def _mirror(client: Any, location: Any, out: Path, report: UploadReport) -> None:
    remote = {rel: info for key, info in client.list().items()
              if (rel := location.relative(key)) is not None}
    previous_doc = _parse(client.get_small(location.key(CATALOG), 16 * 1024 * 1024)) \
        if CATALOG in remote else None
    for key, upload_id in client.uploads():  # left by a publish killed half way
        log.info("aborting the unfinished upload of %s", key)
        client.abort(key, upload_id)
        report.aborted_uploads += 1
    files = _tree(out)
    have: dict[str, str] = {}  # sha256 -> a tree path already in the bucket, whole
    changed = False
    for item in files:
        if item.path == CATALOG:
            new_doc = _parse(item.local.read_bytes())
            if not changed and CATALOG in remote and _same_catalog(previous_doc, new_doc):
                report.unchanged.append(item.path)
                continue
        elif _already_there(client, location, item, remote.get(item.path)):
            report.unchanged.append(item.path)
            have.setdefault(item.sha256, item.path)
            continue
        source = have.get(item.sha256)
        if source is not None and item.size <= COPY_MAX and item.path != CATALOG:
            client.copy(location.key(source), location.key(item.path), _headers(item))
            report.copied.append(item.path)
        else:
            _upload(client, location, item)
            report.uploaded.append(item.path)
            report.bytes_uploaded += item.size
        changed = True
        have.setdefault(item.sha256, item.path)
        if item.path == CATALOG:
            CATALOG_WRITTEN.reached()
        else:
            OBJECT_UPLOADED.reached()
    keep = {f.path for f in files} | _named_by(previous_doc)
    for rel in sorted(remote):
        if rel.startswith(STALE_SPACES) and rel not in keep:
            client.delete(location.key(rel))
            report.deleted.append(rel)
            STALE_DELETED.reached()


def _already_there(client: Any, location: Any, item: _File, listed: Any) -> bool:
    """The bucket holds this content under this name (size from the listing, then the
    sha256 in the object's metadata; an object without one is uploaded again)."""
    if listed is None or listed.size != item.size:
        return False
    head = client.head(location.key(item.path))
    return head is not None and head.size == item.size and head.sha256 == item.sha256


def _upload(client: Any, location: Any, item: _File) -> None:
    key, headers = location.key(item.path), _headers(item)
    if item.size < MULTIPART_THRESHOLD:
        client.put(key, item.local.read_bytes(), headers)
        return
    part = PART_SIZE
    if item.size > PART_SIZE * MAX_PARTS:  # S3 takes at most 10 000 parts: larger ones, in MiB
        part = math.ceil(item.size / MAX_PARTS / (1024 * 1024)) * 1024 * 1024
    client.put_multipart(key, item.local, headers, part, PART_UPLOADED.reached)
