"""``python -m tests.s3_small_parts THRESHOLD PART_SIZE ARGS...``: the CLI with the
multipart thresholds lowered, so a test reaches ``s3.part_uploaded`` with packages
of a few MiB (S3 wants parts of at least 5 MiB but the last)."""

from __future__ import annotations

import sys

import datahubsync.datasets.s3publish as s3publish
from datahubsync.cli import main

if __name__ == "__main__":
    s3publish.MULTIPART_THRESHOLD = int(sys.argv.pop(1))
    s3publish.PART_SIZE = int(sys.argv.pop(1))
    main()
