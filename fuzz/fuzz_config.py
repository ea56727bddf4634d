"""Fuzz target: the config loader (YAML file + DATAHUBSYNC_* overrides).

Contract: any file and any environment give a LoadedConfig or a ConfigError
(one line, exit 2); nothing else escapes.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from datahubsync.core.errors import ConfigError
    from datahubsync.schema import load_config

WORK = tempfile.mkdtemp(prefix="dhs-fuzz-config-")
PATH = os.path.join(WORK, "config.yaml")
KEYS = ["DATAHUBSYNC_HUB__URL", "DATAHUBSYNC_HUB__TIMEOUT", "DATAHUBSYNC_DATASETS__0__NAME",
        "DATAHUBSYNC_DATASETS__0__LOCAL_DIR", "DATAHUBSYNC_SERVE__PORT",
        "DATAHUBSYNC_LOGS__DEDUPE", "DATAHUBSYNC_PICTURES__WORKERS", "DATAHUBSYNC_STATE_DIR",
        "DATAHUBSYNC_SERVE__LOGS_INGEST__STORE_URL", "DATAHUBSYNC_BATCH__JOBS__X__KIND",
        "DATAHUBSYNC_NOPE__X", "DATAHUBSYNC_LOGGING__FILE"]


VALUES = ["", "0", "-1", "[", "[[[]]]", "{a: 1}", "http://h", "/", "sqlite:///x", "~",
          "1e400", "null", "true", "'\\x00'", "9" * 30, "a" * 300]


def test_one_input(data: bytes) -> None:
    """Byte 0: how many overrides; then a (key, value) byte pair each; the rest: the YAML."""
    count = data[0] % 4 if data else 0
    pairs = data[1:1 + 2 * count]
    env = {KEYS[pairs[i] % len(KEYS)]: VALUES[pairs[i + 1] % len(VALUES)]
           for i in range(0, len(pairs) - 1, 2)}
    env["XDG_STATE_HOME"] = WORK
    with open(PATH, "wb") as fh:
        fh.write(data[1 + 2 * count:])
    try:
        load_config(PATH, environ=env)
    except ConfigError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
