"""S3-compatible object storage: addresses, credentials, signed requests, error answers.

One place for what ``hub.url: s3://BUCKET/PREFIX`` (the client) and ``datasets
publish --to s3://...`` (the publisher) share:

- where a key lives (:class:`S3Location` + :class:`S3Settings`: endpoint, region,
  path or virtual-hosted addressing);
- the credentials, from the ``s3`` config section or, when it names none, from the
  AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``), always as one set;
- a ``requests`` session whose every request is signed (SigV4 by
  ``requests-aws4auth``, imported here only when a session is made, so nothing
  else pays for it) and whose refusals become one line naming the credentials;
- :class:`S3Client`, the few calls the publisher needs (list, head, put, copy,
  multipart, delete), each retried like every other request of the tool.

S3 ignores ``If-Range`` (a resumed download of a replaced object would get the
new object's bytes after the old ones): the session sends ``If-Match`` with the
same validator, and when the storage answers 412 fetches the whole object again,
which is what ``If-Range`` would have done. Secrets never appear in a message,
a log line or a ``repr``.

Why requests-aws4auth (MIT, pure Python, needs only requests): it signs the
``requests`` calls the client already makes, so the download code stays one code
path, and it costs ~1 ms of import and 24 kB of the frozen binary; boto3 would add
~17 MB to the binary and ~170 ms to an s3 command's start, the minio SDK ~4 MB and
~65 ms, and neither would let ``download.py`` keep its own Range/If-Range handling.
It passes the S3 examples of AWS's SigV4 documentation (tests/test_s3.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from datahubsync.core.errors import ConfigError, DatahubsyncError, TempFailError, describe_error
from datahubsync.core.http import (
    RetryableStatus,
    RetryPolicy,
    call_with_retry,
    make_session,
    raise_for_retryable,
    read_body,
)
from datahubsync.core.s3url import S3Location
from datahubsync.core.textsafe import printable

log = logging.getLogger(__name__)

ERROR_BODY_MAX = 64 * 1024  # an S3 error document is a few hundred bytes
LIST_BODY_MAX = 16 * 1024 * 1024
DEFAULT_REGION = "us-east-1"
# Answers that say the credentials (or their absence) are the problem.
CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AllAccessDisabled",
    "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "InvalidSecurity",
    "AuthorizationHeaderMalformed", "AuthorizationQueryParametersError",
    "RequestTimeTooSkewed", "MissingSecurityHeader", "AccountProblem",
})


@dataclass(frozen=True)
class S3Settings:
    """Endpoint, region, addressing and credentials, resolved once from config + env."""

    endpoint: str  # scheme://host[:port], no path
    region: str
    addressing: str  # path | virtual
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    credentials_from: str = "none"  # where they came from, for messages (never the values)

    @property
    def signed(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)


def resolve_settings(cfg: Any, environ: Mapping[str, str]) -> S3Settings:
    """The ``s3`` config section, completed from the AWS variables as the AWS tools read
    them. Credentials come as one set: the section's when it names an access key,
    else the environment's; with neither, requests go unsigned (a public bucket)."""
    region = (cfg.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
              or DEFAULT_REGION)
    endpoint = (cfg.endpoint_url or environ.get("AWS_ENDPOINT_URL_S3")
                or environ.get("AWS_ENDPOINT_URL") or "")
    aws = not endpoint
    if aws:
        endpoint = f"https://s3.{region}.amazonaws.com"
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = "s3.endpoint_url" if cfg.endpoint_url else "AWS_ENDPOINT_URL(_S3)"
        raise ConfigError(f"{where}: {endpoint!r} is not an http(s) URL")
    endpoint = f"{parts.scheme}://{parts.netloc}"
    addressing = cfg.addressing_style
    if addressing == "auto":
        addressing = "virtual" if parts.netloc.endswith("amazonaws.com") else "path"
    if cfg.access_key_id or cfg.secret_access_key:
        if not (cfg.access_key_id and cfg.secret_access_key):
            raise ConfigError("s3: set access_key_id and secret_access_key together (the "
                              "secret in DATAHUBSYNC_S3__SECRET_ACCESS_KEY)")
        return S3Settings(endpoint, region, addressing, cfg.access_key_id,
                          cfg.secret_access_key, cfg.session_token or None,
                          "s3.access_key_id / s3.secret_access_key")
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key or secret:
        if not (key and secret):
            raise ConfigError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set "
                              "together")
        return S3Settings(endpoint, region, addressing, key, secret,
                          environ.get("AWS_SESSION_TOKEN") or None,
                          "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    return S3Settings(endpoint, region, addressing)


def _quote_key(key: str) -> str:
    return quote(key, safe="/-_.~")


def bucket_url(location: S3Location, settings: S3Settings) -> str:
    """The URL of the bucket itself (list, multipart listings)."""
    scheme, host = settings.endpoint.split("://", 1)
    if settings.addressing == "virtual":
        return f"{scheme}://{location.bucket}.{host}/"
    return f"{settings.endpoint}/{location.bucket}"


def object_url(location: S3Location, settings: S3Settings, key: str) -> str:
    """The URL of one object (``key`` is the full key, prefix included)."""
    return f"{bucket_url(location, settings).rstrip('/')}/{_quote_key(key)}"


class S3Refused(ConfigError):
    """The storage refused the credentials, or their absence (exit 2: fix the config)."""


class NoSuchBucket(ConfigError):
    """The bucket named in the URL does not exist at that endpoint."""


class S3Error(DatahubsyncError):
    """Any other answer of the storage that a retry cannot fix."""

    def __init__(self, message: str, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def error_of(response: requests.Response) -> tuple[str | None, str]:
    """(Code, Message) of an S3 error document; the body is read at most ERROR_BODY_MAX."""
    body = getattr(response, "_content", False)
    if not isinstance(body, bytes):
        try:
            body = response.raw.read(ERROR_BODY_MAX, decode_content=True) or b""
        except Exception:  # noqa: BLE001 - a broken error body is just no detail
            body = b""
        response._content = body  # noqa: SLF001 - readable again by whoever looks next
    code = re.search(rb"<Code>([^<]{1,100})</Code>", body)
    message = re.search(rb"<Message>([^<]{1,300})</Message>", body)
    return (code.group(1).decode("utf-8", "replace") if code else None,
            printable(message.group(1).decode("utf-8", "replace"), keep_lines=False)
            if message else "")


def _hint(code: str | None, settings: S3Settings) -> str:
    if code == "RequestTimeTooSkewed":
        return "this host's clock is off; run NTP (systemd-timesyncd or chrony)"
    if code == "AuthorizationHeaderMalformed":
        return "check s3.region (or AWS_REGION)"
    if not settings.signed:
        return ("no credentials were given: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or s3.access_key_id and DATAHUBSYNC_S3__SECRET_ACCESS_KEY)")
    if code == "AccessDenied":
        return f"the credentials ({settings.credentials_from}) lack the permission"
    return f"check the credentials ({settings.credentials_from})"


def refusal(response: requests.Response, location: S3Location,
            settings: S3Settings) -> DatahubsyncError | None:
    """The error to raise for an answer that says "not with these credentials" (or "no
    such bucket"), else None (the caller deals with the status)."""
    status = response.status_code
    if status not in (400, 401, 403, 404):
        return None
    code, message = error_of(response)
    if status == 404:
        if code == "NoSuchBucket":
            return NoSuchBucket(f"{location.url}: no bucket {location.bucket!r} at "
                                f"{settings.endpoint} (check the URL and s3.endpoint_url)")
        return None
    if status == 400 and code not in CREDENTIAL_CODES:
        return None
    who = "the credentials" if settings.signed else "anonymous access"
    detail = f"{code}: {message}" if code and message else (code or f"HTTP {status}")
    return S3Refused(f"{location.url}: the storage at {settings.endpoint} refused {who} "
                     f"({detail}); {_hint(code, settings)}")


class _S3Auth(requests.auth.AuthBase):
    """Signs every request (when there are credentials); turns a resume's ``If-Range`` into
    an ``If-Match`` too, since S3 does not implement ``If-Range``."""

    def __init__(self, settings: S3Settings) -> None:
        self._signer: Callable[[Any], Any] | None = None
        if settings.signed:
            from requests_aws4auth import AWS4Auth  # lazily: only the s3 paths pay for it

            kwargs = {"session_token": settings.session_token} if settings.session_token else {}
            self._signer = AWS4Auth(settings.access_key_id, settings.secret_access_key,
                                    settings.region, "s3", **kwargs)

    def __repr__(self) -> str:
        return "<S3 request signer>"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        validator = request.headers.get("If-Range", "")
        if validator.startswith('"') and "Range" in request.headers \
                and "If-Match" not in request.headers:
            request.headers["If-Match"] = validator
            request.headers["X-Datahubsync-If-Range"] = "1"  # ours: 412 means "changed"
        return self._signer(request) if self._signer else request


def s3_session(location: S3Location, settings: S3Settings, pool: int = 4) -> requests.Session:
    """A keep-alive session for one bucket: signed, with refusals raised as
    :class:`S3Refused` / :class:`NoSuchBucket` (ConfigError: exit 2, one line)."""
    session = make_session(pool=pool)
    session.auth = _S3Auth(settings)

    def answered(response: requests.Response, **kwargs: Any) -> requests.Response:
        sent = response.request
        if response.status_code == 412 and sent.headers.get("X-Datahubsync-If-Range"):
            whole = sent.copy()
            for name in ("Range", "If-Range", "If-Match", "X-Datahubsync-If-Range"):
                whole.headers.pop(name, None)  # none of them is signed: the signature holds
            response.close()
            log.info("%s changed since the partial download; fetching it whole",
                     response.url.split("?")[0])
            return session.send(whole, **kwargs)
        problem = refusal(response, location, settings)
        if problem is not None:
            response.close()
            raise problem
        return response

    session.hooks["response"].append(answered)
    return session


@dataclass
class Counters:
    """Requests by method and bytes sent: what a publish reports."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0

    def count(self, method: str, sent: int = 0) -> None:
        self.requests[method] = self.requests.get(method, 0) + 1
        self.bytes_sent += sent


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in node if _local(child.tag) == name]


def _text(node: ElementTree.Element, name: str) -> str | None:
    found = _children(node, name)
    return found[0].text if found else None


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    sha256: str | None = None  # x-amz-meta-sha256, from HEAD only


class S3Client:
    """The object calls the publisher makes, on one bucket, each under the retry policy.

    Retryable failures (connection, 5xx, 429) that outlast the retries are
    :class:`TempFailError` (exit 75); refusals are ConfigError (exit 2); any other
    answer is :class:`S3Error`.
    """

    def __init__(self, location: S3Location, settings: S3Settings, policy: RetryPolicy,
                 timeout: tuple[float, float] = (10, 300)) -> None:
        self.location, self.settings = location, settings
        self.policy, self.timeout = policy, timeout
        self.session = s3_session(location, settings)
        self.counters = Counters()

    def __enter__(self) -> S3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _request(self, method: str, key: str | None, what: str, *,
                 params: dict[str, str] | None = None, data: bytes | None = None,
                 headers: dict[str, str] | None = None,
                 ok: tuple[int, ...] = (200,)) -> requests.Response:
        url = (object_url(self.location, self.settings, key) if key is not None
               else bucket_url(self.location, self.settings))

        def once() -> requests.Response:
            self.counters.count(method, len(data) if data else 0)
            return raise_for_retryable(self.session.request(
                method, url, params=params, data=data, headers=headers or {},
                timeout=self.timeout, stream=True))

        try:
            response = call_with_retry(once, self.policy)
        except RetryableStatus as exc:
            raise TempFailError(f"{what}: the storage at {self.settings.endpoint} answered "
                                f"HTTP {exc.response.status_code} (tried "
                                f"{self.policy.attempts} times)") from None
        except (requests.RequestException, ConnectionError, TimeoutError) as exc:
            raise TempFailError(f"{what}: the storage at {self.settings.endpoint} is "
                                f"unreachable: {describe_error(exc)}") from None
        if response.status_code not in ok:
            code, message = error_of(response)
            response.close()
            raise S3Error(f"{what}: HTTP {response.status_code}"
                          f"{f' {code}' if code else ''}{f': {message}' if message else ''}",
                          response.status_code, code)
        return response

    def _body(self, response: requests.Response, limit: int = LIST_BODY_MAX) -> bytes:
        with response:
            body = read_body(response, limit)
        if re.search(rb"^\s*(<\?xml[^>]*>\s*)?<Error>", body):  # a 200 that is an error
            code = re.search(rb"<Code>([^<]{1,100})</Code>", body)
            raise S3Error(f"the storage answered an error: "
                          f"{code.group(1).decode('utf-8', 'replace') if code else body[:80]!r}")
        return body

    def _xml(self, response: requests.Response) -> ElementTree.Element:
        body = self._body(response)
        try:
            return ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise S3Error(f"the storage answered unreadable XML: {exc}") from None

    def check_bucket(self) -> None:
        """One cheap signed request: refusals and a missing bucket show here, first."""
        self._xml(self._request("GET", None, f"list {self.location.url}",
                                params={"list-type": "2", "max-keys": "1",
                                        "prefix": self.location.key("")}))

    def list(self) -> dict[str, ObjectInfo]:
        """Every object under the prefix: key -> size and ETag."""
        found: dict[str, ObjectInfo] = {}
        token: str | None = None
        prefix = self.location.key("")
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            root = self._xml(self._request("GET", None, f"list {self.location.url}",
                                           params=params))
            for item in _children(root, "Contents"):
                key, size = _text(item, "Key"), _text(item, "Size")
                if key is not None and size is not None and size.isdigit():
                    found[key] = ObjectInfo(int(size), (_text(item, "ETag") or "").strip('"'))
            token = _text(root, "NextContinuationToken")
            if (_text(root, "IsTruncated") or "").lower() != "true" or not token:
                return found

    def head(self, key: str) -> ObjectInfo | None:
        response = self._request("HEAD", key, f"head {key}", ok=(200, 404))
        response.close()
        if response.status_code == 404:
            return None
        length = response.headers.get("Content-Length", "")
        return ObjectInfo(int(length) if length.isdigit() else -1,
                          response.headers.get("ETag", "").strip('"'),
                          response.headers.get("x-amz-meta-sha256"))

    def get_small(self, key: str, limit: int) -> bytes | None:
        """A small object's bytes (None when there is none), refused past ``limit``."""
        response = self._request("GET", key, f"get {key}", ok=(200, 404))
        if response.status_code == 404:
            response.close()
            return None
        with response:
            return read_body(response, limit)

    def put(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        self._body(self._request("PUT", key, f"upload {key}", data=body, headers=headers),
                   ERROR_BODY_MAX)

    def copy(self, source: str, key: str, headers: dict[str, str]) -> None:
        """Server-side copy (no bytes travel), metadata replaced by ``headers``."""
        copy_headers = {"x-amz-copy-source": _quote_key(f"/{self.location.bucket}/{source}"),
                        "x-amz-metadata-directive": "REPLACE", **headers}
        self._body(self._request("PUT", key, f"copy {source} to {key}", headers=copy_headers),
                   ERROR_BODY_MAX)

    def delete(self, key: str) -> None:
        self._request("DELETE", key, f"delete {key}", ok=(200, 204, 404)).close()

    def uploads(self) -> list[tuple[str, str]]:
        """Unfinished multipart uploads under the prefix: (key, upload id)."""
        root = self._xml(self._request("GET", None, f"list uploads in {self.location.url}",
                                       params={"uploads": "", "prefix": self.location.key("")}))
        found = []
        for item in _children(root, "Upload"):
            key, upload = _text(item, "Key"), _text(item, "UploadId")
            if key and upload:
                found.append((key, upload))
        return found

    def abort(self, key: str, upload_id: str) -> None:
        self._request("DELETE", key, f"abort the upload of {key}", ok=(200, 204, 404),
                      params={"uploadId": upload_id}).close()

    def put_multipart(self, key: str, path: Path, headers: dict[str, str], part_size: int,
                      on_part: Callable[[], None] = lambda: None) -> None:
        """Upload ``path`` in parts of ``part_size``; the object appears whole when the
        upload completes (a reader never sees part of it). Failing, it is aborted; a
        process killed half way leaves it to :meth:`uploads` / :meth:`abort`."""
        root = self._xml(self._request("POST", key, f"start the upload of {key}",
                                       params={"uploads": ""}, headers=headers))
        upload_id = _text(root, "UploadId")
        if not upload_id:
            raise S3Error(f"start the upload of {key}: the storage sent no UploadId")
        try:
            parts = []
            with open(path, "rb") as fh:
                number = 1
                while chunk := fh.read(part_size):
                    response = self._request("PUT", key, f"upload part {number} of {key}",
                                             params={"partNumber": str(number),
                                                     "uploadId": upload_id}, data=chunk)
                    response.close()
                    etag = response.headers.get("ETag")
                    if not etag:
                        raise S3Error(f"upload part {number} of {key}: no ETag in the answer")
                    parts.append(f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag>"
                                 "</Part>")
                    on_part()
                    number += 1
            document = ("<CompleteMultipartUpload>" + "".join(parts)
                        + "</CompleteMultipartUpload>").encode()
            self._body(self._request("POST", key, f"complete the upload of {key}",
                                     params={"uploadId": upload_id}, data=document,
                                     headers={"Content-Type": "application/xml"}))
        except BaseException:
            try:
                self.abort(key, upload_id)
            except DatahubsyncError as exc:
                log.warning("could not abort the upload of %s (the next publish does): %s",
                            key, exc)
            raise


def file_sha256(path: Path, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
