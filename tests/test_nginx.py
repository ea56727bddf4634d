r"""``datahubsync serve nginx-config`` with a real nginx (Debian nginx-light) in front of serve.

nginx is started by the test as its own process (``nginx -p PREFIX -c CONF -g 'daemon
off; ...'``, a temp prefix, a free 127.0.0.1 port) on the config our command writes.
It serves packages, manifests, deltas and ``/files`` from disk (the access log says
which requests went to serve), applies serve's root mapping, confinement and token
check, and proxies the rest. Also here: the store's stable ``current/`` links.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from datahubsync.datasets.packager import FileDigest
from datahubsync.datasets.store import CURRENT_DIR, PackageRecord, PackageStore
from tests.helpers import (
    Hub,
    client_config,
    free_port,
    make_dataset,
    run_cli,
    tree_bytes,
    wait_until,
    write_yaml,
)
from tests.pgserver import in_ci
from tests.traversal_corpus import (
    PREFIX,
    RAW_URL_TARGETS,
    Tree,
    build_tree,
    client_paths,
    file_url_path,
)

NGINX = Path("/usr/sbin/nginx")
TOKEN = "nginx-Token-0123456789"
WEIRD = 'we"ird\\to$ke{n};'  # quotes, a backslash, "$", braces: escaped, never interpolated
A = "D:\\pic\\2025\\10\\01\\a.jpg"
ROW = b"2026-11-24,10.01,10.02,1234\r\n"
FILE_ROUTES = ("/files/", "/package/", "/manifest/", "/delta/")
DOT_DOT = re.compile(r"/(\.|%2e){2}(/|%2f|$)", re.I)


def require_nginx() -> None:
    if not NGINX.exists():
        message = "needs /usr/sbin/nginx (Debian nginx-light; make test installs it)"
        if in_ci():
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)


# --- the store's stable links (no nginx needed) -------------------------------------------


def _record(dataset: str, version: str) -> PackageRecord:
    return PackageRecord(dataset=dataset, version=version, file=f"{dataset}_{version}.zip",
                         last_updated="2026-01-01T00:00:00+08:00", newest_mtime_ns=0,
                         sha256="0" * 64, size=0, file_count=1, total_size=1,
                         built_at="2026-01-01T00:00:00+08:00", signature="s",
                         build_seconds=0.0)


def _commit(store: PackageStore, dataset: str, version: str, keep: int = 1,
            manifest: bool = True) -> bytes:
    data = f"{dataset}-{version}".encode()
    temp = store.temp_path(dataset, version)
    temp.write_bytes(data)
    files = (FileDigest("a.csv", 1, 0, "0" * 64),) if manifest else ()
    store.commit(temp, _record(dataset, version), keep, files)
    return data


def test_commit_points_the_current_links_at_the_new_version(tmp_path: Path) -> None:
    store = PackageStore(tmp_path / "cache")
    package, manifest = store.current_links("alpha")
    assert package == tmp_path / "cache" / CURRENT_DIR / "alpha.zip"
    first = _commit(store, "alpha", "20260101_080000")
    assert os.readlink(package) == "../alpha_20260101_080000.zip"
    assert package.read_bytes() == first
    assert os.readlink(manifest) == "../alpha_20260101_080000.manifest.json"
    assert json.loads(manifest.read_text())["version"] == "20260101_080000"
    second = _commit(store, "alpha", "20260102_080000", keep=0)  # the first one is pruned
    assert package.read_bytes() == second
    assert not (tmp_path / "cache" / "alpha_20260101_080000.zip").exists()
    assert json.loads(manifest.read_text())["version"] == "20260102_080000"
    _commit(store, "alpha", "20260103_080000", manifest=False)  # built without a manifest
    assert not manifest.exists() and not manifest.is_symlink()  # never an older manifest
    _commit(store, "beta", "20260101_080000")
    assert sorted(p.name for p in package.parent.iterdir()) == [
        "alpha.zip", "beta.manifest.json", "beta.zip"]  # no temp name left behind


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_nginx_reads_the_manifest_as_it_reads_the_package(tmp_path: Path, umask: int) -> None:
    """nginx's workers run as another user (in the service's group, as the setup says):
    the manifest gets the mode the package gets under the service's umask (it was 0600,
    and nginx answered 404 for every manifest)."""
    store = PackageStore(tmp_path / "cache")
    old = os.umask(umask)
    try:
        _commit(store, "alpha", "20260101_080000")
    finally:
        os.umask(old)
    package, manifest = store.current_links("alpha")
    assert stat.S_IMODE(manifest.stat().st_mode) == stat.S_IMODE(package.stat().st_mode) \
        == 0o666 & ~umask


def test_readers_never_see_the_link_missing(tmp_path: Path) -> None:
    store = PackageStore(tmp_path / "cache")
    _commit(store, "alpha", "20260101_000000")
    package = store.current_links("alpha")[0]
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(package.read_bytes())
            except OSError as exc:
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for minute in range(1, 60):
            data = _commit(store, "alpha", f"20260101_00{minute:02d}00", keep=1)
            # the reader sees every version, however loaded the machine is
            wait_until(lambda data=data: data in seen or errors, "a read", interval=0.001)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert package.read_bytes() == b"alpha-20260101_005900"


def test_restart_puts_stale_or_missing_links_right(tmp_path: Path) -> None:
    """What a commit killed between its sidecar and its link leaves, or an upgrade."""
    store = PackageStore(tmp_path / "cache")
    _commit(store, "alpha", "20260101_080000")
    _commit(store, "alpha", "20260102_080000")
    package, manifest = store.current_links("alpha")
    package.unlink()
    manifest.unlink()
    os.symlink("../alpha_20260101_080000.zip", package)  # stale: the previous version
    (package.parent / ".alpha.zip.123.tmp").symlink_to("../alpha_20260101_080000.zip")
    store.remove_temp_files()  # what serve's builder runs at start
    assert os.readlink(package) == "../alpha_20260102_080000.zip"
    assert os.readlink(manifest) == "../alpha_20260102_080000.manifest.json"
    assert sorted(p.name for p in package.parent.iterdir()) == ["alpha.manifest.json",
                                                                "alpha.zip"]


# --- the command -------------------------------------------------------------------------


def test_writes_the_config_and_a_0600_tokens_file(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "hub.yaml", {
        "state_dir": str(tmp_path / "state"),
        "serve": {"port": 8123, "api_tokens": [TOKEN, WEIRD],
                  "picture_roots": [{"prefix": PREFIX, "path": str(tmp_path / "pic")}]}})
    out = tmp_path / "nginx"
    old = os.umask(0)  # the mode must not depend on the umask
    try:
        result = run_cli(["serve", "nginx-config", "--out", str(out), "--json"], config=cfg)
    finally:
        os.umask(old)
    doc = result.json()
    main, tokens = out / "datahubsync.conf", out / "datahubsync-tokens.conf"
    assert (doc["config"], doc["tokens"]) == (str(main), str(tokens))
    assert doc["upstream"] == "127.0.0.1:8123"  # serve.host 0.0.0.0: nginx asks loopback
    assert any("trusted_proxies" in w for w in doc["warnings"])
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    text, secret = main.read_text(), tokens.read_text()
    assert TOKEN not in text and "ird" not in text and "ke{n}" not in text
    assert f'include "{tokens}";' in text and "listen 80;" in text
    assert r'"~^nginx\\-Token\\-0123456789$" 1;' in secret  # PCRE-escaped, anchored
    assert TOKEN not in secret  # only escaped: nginx compares plain map strings caselessly
    # the options of serve itself still work in front of the sub-command, --config after it
    trusted = write_yaml(tmp_path / "t.yaml", {"serve": {"trusted_proxies": ["127.0.0.1/32"]}})
    again = run_cli(["serve", "--port", "9001", "nginx-config", "--out", str(out),
                     "--listen", "127.0.0.1:8081", "--config", str(trusted), "--json"]).json()
    assert again["upstream"] == "127.0.0.1:9001" and again["warnings"] == []
    assert "listen 127.0.0.1:8081;" in main.read_text()
    # nginx's open_file_cache, for /files only, unless turned off
    files_block = text[text.index("location ^~ /files/"):]
    assert "open_file_cache_valid 1s;" in files_block
    assert "open_file_cache" not in text[:text.index("location ^~ /files/")]
    run_cli(["serve", "nginx-config", "--out", str(out), "--file-cache-valid", "0"], config=cfg)
    assert "open_file_cache" not in main.read_text()
    bad = write_yaml(tmp_path / "bad.yaml", {"serve": {"api_tokens": ["has space"]}})
    assert "whitespace" in run_cli(["serve", "nginx-config", "--out", str(out)],
                                   config=bad, expect=2).err


# --- a real nginx in front of a real serve -----------------------------------------------


@dataclass
class Front:
    hub: Hub
    tree: Tree
    base: Path
    port: int
    access_log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, target: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, Message, bytes]:
        """One raw request: the target is sent exactly as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, target, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def upstreams(self) -> list[tuple[str, str, str]]:
        """(request target, status, upstream address or "-") of every request so far."""
        return [tuple(line.rsplit(" ", 2)) for line in  # type: ignore[misc]
                self.access_log.read_text().splitlines() if line]

    def file_requests_proxied(self) -> list[str]:
        """File-route requests that nginx passed to serve (none may be)."""
        return [target for target, _, upstream in self.upstreams()
                if target.startswith(FILE_ROUTES) and upstream != "-"
                # /files/../x is /x once nginx has normalised it: not a file route
                and not DOT_DOT.search(target)]


def _nginx_conf(prefix: Path, include: Path, access_log: Path) -> Path:
    """A main nginx.conf for a test instance: our file included in its http block."""
    prefix.mkdir(exist_ok=True)
    temp = "".join(f"    {kind}_temp_path {prefix / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(
        # run as root, nginx's workers would be "nobody", who cannot read pytest's dirs
        ("user root;\n" if os.geteuid() == 0 else "")
        + "worker_processes 1;\nevents { worker_connections 512; }\nhttp {\n" + temp
        + "    log_format up '$request_uri $status $upstream_addr';\n"
        + f"    access_log {access_log} up;\n"
        + f"    include {include};\n}}\n")
    return conf


def _nginx_argv(prefix: Path, conf: Path, *extra: str) -> list[str]:
    return [str(NGINX), "-p", str(prefix), "-c", str(conf), *extra, "-g",
            f"daemon off; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'};"]


def test_config_without_picture_roots_is_valid_nginx(tmp_path: Path) -> None:
    require_nginx()
    cfg = write_yaml(tmp_path / "hub.yaml", {"state_dir": str(tmp_path / "state"),
                                             "serve": {"trusted_proxies": ["127.0.0.1/32"]}})
    run_cli(["serve", "nginx-config", "--out", str(tmp_path / "out"), "--listen",
             f"127.0.0.1:{free_port()}"], config=cfg)
    text = (tmp_path / "out" / "datahubsync.conf").read_text()
    assert "/files" not in text.split("server {", 1)[1]  # serve's own 404, through the proxy
    prefix = tmp_path / "prefix"
    conf = _nginx_conf(prefix, tmp_path / "out" / "datahubsync.conf", prefix / "access.log")
    checked = subprocess.run(_nginx_argv(prefix, conf, "-t"), capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr


def _start_nginx(base: Path, hub: Hub, upstream: str | None = None
                 ) -> tuple[int, subprocess.Popen[bytes], Path]:
    prefix = base / "nginx-prefix"
    access_log = prefix / "access.log"
    out = base / "nginx-out"
    for _attempt in range(5):  # the free port may be taken before nginx binds it
        port = free_port()
        run_cli(["serve", "nginx-config", "--out", str(out), "--listen", f"127.0.0.1:{port}",
                 "--upstream", upstream or hub.url.removeprefix("http://")], config=hub.config)
        conf = _nginx_conf(prefix, out / "datahubsync.conf", access_log)
        error_log = prefix / "error.log"
        proc = subprocess.Popen(_nginx_argv(prefix, conf),
                                stderr=open(prefix / "stderr.log", "ab"))
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return port, proc, access_log
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log = "".join(path.read_text() for path in (error_log, prefix / "stderr.log")
                      if path.exists())
        if "Address already in use" not in log:
            raise AssertionError(f"nginx did not start:\n{log}")
    raise AssertionError("no free port for nginx after 5 attempts")


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    require_nginx()
    base = tmp_path_factory.mktemp("nginx")
    tree = build_tree(base / "tree")
    data = base / "data"
    make_dataset(data / "alpha", files=6, rows=50)
    make_dataset(data / "gamma", files=10, rows=100, seed=3)
    hub = Hub(base, data, workers=1, debounce=0.5, api_tokens=[TOKEN, WEIRD],
              trusted_proxies=["127.0.0.1/32"],
              picture_roots=[{"prefix": PREFIX, "path": str(tree.root)}]).start()
    proc = None
    try:
        for name in ("alpha", "gamma"):
            hub.wait_ready(name)
        port, proc, access_log = _start_nginx(base, hub)
        yield Front(hub, tree, base, port, access_log, proc)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        hub.stop()


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_files_need_a_token_checked_by_nginx(front: Front) -> None:
    url, data = file_url_path(A), front.tree.files[A]
    for headers in ({}, _bearer("wrong"), _bearer(TOKEN[:-1]), _bearer(TOKEN.lower()),
                    _bearer(TOKEN + "x"), {"X-API-Key": TOKEN.upper()},
                    {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
                    # a wrong X-API-Key is not rescued by a right bearer, as in serve
                    {"X-API-Key": "wrong", **_bearer()}):
        status, response_headers, body = front.get(url, headers)
        assert (status, body) == (401, b""), headers
        assert response_headers["WWW-Authenticate"] == "Bearer"
    # checked before the path: a traversal without a token says nothing either
    assert front.get(file_url_path(r"D:\pic\..\outside\secret.txt"))[0] == 401
    for headers in (_bearer(), {"Authorization": f"bearer   {TOKEN}"}, {"X-API-Key": TOKEN},
                    {"X-API-Key": "", **_bearer()}, {"X-API-Key": WEIRD}, _bearer(WEIRD)):
        status, response_headers, body = front.get(url, headers)
        assert (status, body) == (200, data), headers
        assert response_headers["Content-Type"] == "image/jpeg"
        assert response_headers["Server"] == "nginx"  # no version


def test_files_map_like_serve(front: Front) -> None:
    for client_path, data in front.tree.files.items():
        status, _, body = front.get(file_url_path(client_path), _bearer())
        if client_path.endswith("inside_link.jpg"):
            # nginx refuses every symlink under a root (disable_symlinks on); serve
            # follows one that stays inside: stricter, never wider
            assert (status, body) == (404, b"")
        else:
            assert (status, body) == (200, data), client_path
    data = front.tree.files[A]
    for target in ("/files/D:%5Cpic%5C2025%5C10%5C01%5Ca.jpg", "/files/d:/pic/2025/10/01/a.jpg",
                   "/files/D%3A/pic/2025/10/01/a.jpg", "/files/D:/PIC/2025/10/01/a.jpg",
                   "/files/D:/pic//2025/./10/01/a.jpg", "/files/D:\\pic/2025\\10/01\\a.jpg"):
        status, _, body = front.get(target, _bearer())
        assert (status, body) == (200, data), target


def test_traversal_corpus_gets_404_and_nothing_outside_is_opened(front: Front) -> None:
    from tests.inotify import OpenWatch

    base, secret = front.base / "tree", front.tree.secret
    with OpenWatch([base / "outside", base / "pic_evil", base]) as watch:
        for client_path in client_paths(base):
            status, _, body = front.get(file_url_path(client_path), _bearer())
            assert secret not in body, client_path
            assert status in (404, 400), (client_path, status)
            if status == 404:
                assert body == b"", client_path
        # nginx collapses these before mapping; serve refuses them, so must nginx
        for target in [*RAW_URL_TARGETS, "/files/D:/pic/2025/../ok.jpg", "/files/./D:/pic/ok.jpg",
                       "/files/D:/pic/2025/%2E%2E/ok.jpg", "/files//D:/pic/ok.jpg",
                       "/files/D:/pic/2025/..%2Fok.jpg", "/files/.%5CD:%5Cpic%5Cok.jpg"]:
            status, _, body = front.get(target, _bearer())
            assert secret not in body, target
            assert status in (404, 400), (target, status)
        # nginx opens the root itself (disable_symlinks from=root): that is inside
        assert [e for e in watch.events() if e[:2] != (base, "pic")] == []
        (base / "outside" / "secret.txt").read_bytes()  # the watch does see an open
        assert watch.events()
    assert front.file_requests_proxied() == []


def test_range_etag_and_if_range(front: Front) -> None:
    for url, headers, data in (
            (file_url_path(A), _bearer(), front.tree.files[A]),
            ("/package/alpha.zip", {}, None)):
        status, response_headers, body = front.get(url, headers)
        assert status == 200
        data = data if data is not None else body
        assert body == data and int(response_headers["Content-Length"]) == len(data)
        etag = response_headers["ETag"]
        assert etag and response_headers["Accept-Ranges"] == "bytes"
        assert "Last-Modified" in response_headers
        status, response_headers, body = front.get(url, {**headers, "Range": "bytes=10-19"})
        assert (status, body) == (206, data[10:20])
        assert response_headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        assert front.get(url, {**headers, "Range": "bytes=-5"})[::2] == (206, data[-5:])
        assert front.get(url, {**headers, "Range": f"bytes={len(data) + 10}-"})[0] == 416
        resumed = front.get(url, {**headers, "Range": "bytes=10-", "If-Range": etag})
        assert resumed[::2] == (206, data[10:])
        # a stale validator: the whole file, never a range of another version
        stale = front.get(url, {**headers, "Range": "bytes=10-", "If-Range": '"1-2"'})
        assert stale[::2] == (200, data)
        several = front.get(url, {**headers, "Range": "bytes=0-1,5-9"})
        assert several[::2] == (200, data)  # several ranges: the whole file, as serve does
        assert front.get(url, {**headers, "If-None-Match": etag})[::2] == (304, b"")
        status, response_headers, body = front.get(url, headers, method="HEAD")
        assert (status, body) == (200, b"") and int(response_headers["Content-Length"]) == len(data)


def test_packages_from_disk_and_the_rest_from_serve(front: Front) -> None:
    catalog = json.loads(front.get("/api/datasets")[2])  # proxied to serve
    entry = {d["name"]: d for d in catalog["datasets"]}["alpha"]
    status, headers, body = front.get("/package/alpha.zip")  # the old clients' plain GET
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert len(body) == entry["package_size"]
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    status, _, body = front.get("/manifest/alpha.json")
    assert status == 200 and json.loads(body)["version"] == entry["version"]
    for target in ("/package/nope.zip", "/package/alpha", "/package/.alpha.zip",
                   "/package/current.zip", "/package/../hub.yaml", "/package/alpha.zip.json",
                   "/package/%2e%2e%2fhub.yaml.zip", "/manifest/nope.json",
                   "/delta/alpha/1-2.zip", "/delta/alpha/../../hub.yaml"):
        status, _, body = front.get(target)
        assert status in (404, 400), target
        assert b"alpha" not in body and b"state_dir" not in body, target
    assert front.get("/package/nope.zip")[::2] == (404, b'{"error": "Package not found"}')
    assert json.loads(front.get("/health")[2])["status"] == "ok"
    # X-Forwarded-For from nginx counts (serve.trusted_proxies): loopback needs no token
    status, _, body = front.get("/api/v1/sync-status/sync/batch")
    assert status == 200 and json.loads(body)["status"] == "success"
    # nginx appends the real client, the hop serve reads: a forged first hop changes nothing
    status, _, _ = front.get("/api/v1/sync-status/sync/batch",
                             {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"})
    assert status == 200


def test_sync_and_a_new_version_through_nginx(front: Front) -> None:
    base = front.base / "client"
    base.mkdir()
    cfg = client_config(base, front.url, ["alpha", "gamma"])

    def sync() -> dict[str, dict[str, object]]:
        result = run_cli(["datasets", "sync", "--json"], config=cfg)
        return {d["name"]: d for d in json.loads(result.out)["datasets"]}

    first = sync()
    data = front.base / "data"
    for name in ("alpha", "gamma"):
        assert first[name]["status"] == "installed" and first[name]["method"] == "full"
        assert tree_bytes(base / "local" / name) == tree_bytes(data / name)
    old = front.hub.datasets()["gamma"]
    later = time.time() + 10
    for path in (data / "gamma").rglob("*.csv"):  # a trading day: a row in every file
        with open(path, "ab") as fh:
            fh.write(ROW)
        os.utime(path, (later, later))

    def published() -> dict[str, object] | None:
        entry = front.hub.datasets()["gamma"]
        return entry if entry["version"] != old["version"] and entry["deltas"] else None

    new = wait_until(published, "a new version of gamma with a delta")
    # what nginx serves next is the new package (the link moved with the publish)
    wait_until(lambda: hashlib.sha256(front.get("/package/gamma.zip")[2]).hexdigest()
               == new["sha256"], "nginx to serve the new package")
    second = sync()
    assert second["alpha"]["status"] == "up_to_date"
    assert second["gamma"]["status"] == "installed"
    assert second["gamma"]["method"] == "delta", second["gamma"]  # /manifest, /delta by nginx
    assert tree_bytes(base / "local" / "gamma") == tree_bytes(data / "gamma")
    assert any(t.startswith("/delta/gamma/") and u == "-" for t, _, u in front.upstreams())
    assert front.file_requests_proxied() == []  # no file request reached serve
    assert any(u != "-" for t, _, u in front.upstreams() if t == "/api/datasets")


def test_pictures_through_the_front_come_from_nginx_one_get_each(front: Front) -> None:
    """The front answers the bundle route with 404 (it would be proxied to serve, slower
    than nginx's sendfile): the client takes that for 'no bundles' and fetches each
    picture with a GET that nginx serves from disk, none of them reaching serve."""
    from datahubsync.pictures.transfer import HttpTransport, local_path

    before = len(front.upstreams())
    transport = HttpTransport(front.url, TOKEN, 30, bundle_files=32)
    names = [n for n in sorted(front.tree.files) if not n.endswith("inside_link.jpg")]
    mirror = front.base / "bundle-mirror"
    got = transport.fetch_many([(n, local_path(mirror, n)) for n in names])
    transport.close()
    assert [g.state for g in got] == ["downloaded"] * len(names)
    assert all(local_path(mirror, n).read_bytes() == front.tree.files[n] for n in names)
    assert not transport.bundles
    served = front.upstreams()[before:]
    assert [status for target, status, _ in served if "bundle" in target] == ["404"]
    assert all(upstream == "-" for _, _, upstream in served), served


def test_a_new_picture_is_seen_at_once_and_a_replaced_one_once_the_cache_expires(
        front: Front) -> None:
    """nginx keeps open descriptors of /files for --file-cache-valid (1 s) but no lookup
    errors: a picture written after a 404 is served at once, and one replaced by a
    rename is served new once the second is over (polled, generous bound)."""
    name = "D:\\pic\\2025\\10\\01\\fresh.jpg"
    path = front.tree.root / "2025" / "10" / "01" / "fresh.jpg"
    url = file_url_path(name)
    try:
        assert front.get(url, _bearer())[:3:2] == (404, b"")
        path.write_bytes(b"first")
        assert front.get(url, _bearer())[:3:2] == (200, b"first")
        (path.parent / "fresh.tmp").write_bytes(b"second!")
        os.replace(path.parent / "fresh.tmp", path)
        wait_until(lambda: front.get(url, _bearer())[:3:2] == (200, b"second!"),
                   "the replaced picture through nginx", timeout=30, interval=0.2)
        path.unlink()
        wait_until(lambda: front.get(url, _bearer())[0] == 404,
                   "the removed picture to be gone through nginx", timeout=30, interval=0.2)
    finally:
        path.unlink(missing_ok=True)
