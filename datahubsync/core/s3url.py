"""``s3://BUCKET/PREFIX``: parsed and checked without importing any HTTP code (the
config validator uses it; :mod:`datahubsync.core.s3` does the requests)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes at either end).

    ValueError says what is wrong: the bucket must follow S3's naming rules and
    each prefix segment is letters, digits, '.', '_', '-' (keys are built from it).
    """
    if not url.startswith("s3://"):
        raise ValueError("must start with s3://")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 lowercase letters, "
                         "digits, '.', '-')")
    prefix = prefix.strip("/")
    for segment in prefix.split("/") if prefix else []:
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(f"prefix segment {segment!r}: use letters, digits, '.', '_', '-' "
                             "(not starting with '.')")
    return bucket, prefix


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix: where a published tree lives."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        return cls(*parse_s3_url(url))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, relative: str) -> str:
        """The object key of a path of the tree (``api/datasets`` -> ``PREFIX/api/datasets``)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, key: str) -> str | None:
        """The tree path of an object key, or None when the key is outside the prefix."""
        if not self.prefix:
            return key
        return key[len(self.prefix) + 1:] if key.startswith(self.prefix + "/") else None
