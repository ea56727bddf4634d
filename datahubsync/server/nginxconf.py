r"""``datahubsync serve nginx-config``: an nginx front-end that serves our files from disk.

Two files, written into one directory:

- ``datahubsync.conf`` (0644): an http-level include (``map``, ``upstream``,
  ``server``). nginx itself serves ``/package/NAME.zip`` and
  ``/manifest/NAME.json`` through the store's stable links (``current/``, see
  :mod:`datahubsync.datasets.store`), ``/delta/NAME/FROM-TO.zip`` by its name,
  and ``/files/{client path}`` under ``serve.picture_roots`` with the same
  mapping as :mod:`datahubsync.pictures.paths` (longest prefix first, drive and
  prefix case-insensitive, ``\`` or ``/``) and the same refusals (``..``,
  control characters, ``:`` after the drive, UNC paths, symlinks, directories:
  all the same empty 404). Everything else goes to ``serve``.
- ``datahubsync-tokens.conf`` (0600): the tokens of ``serve.api_tokens`` that
  ``/files`` accepts (``X-API-Key``, else ``Authorization: Bearer``), as two
  ``map`` blocks of case-sensitive anchored regexes (nginx compares plain map
  strings case-insensitively). The main file only includes it.

Pure functions build the text; :func:`write_config` writes the files atomically.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datahubsync.core.statefile import write_bytes_atomic
from datahubsync.pictures.bundle_format import PATH as BUNDLE_PATH
from datahubsync.pictures.paths import Root, make_roots, split_client_path

if TYPE_CHECKING:
    from datahubsync.schema import ServeConfig

MAIN_FILE = "datahubsync.conf"
TOKENS_FILE = "datahubsync-tokens.conf"
BACKSLASH_REWRITES = 32  # backslashes turned into "/" per request; a path with more: 404
HEADER_BUFFER = "16k"  # request lines of long (percent-encoded) picture paths
TYPES = {"application/zip": "zip", "application/json": "json", "image/jpeg": "jpg jpeg",
         "image/png": "png", "image/gif": "gif", "image/bmp": "bmp", "image/webp": "webp",
         "image/tiff": "tif tiff", "text/plain": "txt", "text/csv": "csv"}
_FORBIDDEN_IN_PATHS = re.compile(r"[\x00-\x1f\x7f$]")
BS = "\\"  # one backslash (f-string expressions cannot hold one before Python 3.12)
# Regexes (PCRE, before nginx quoting) of the /files location:
RE_CONTROL = r"[\x00-\x1f\x7f]"
RE_BACKSLASH = BS * 2  # a literal backslash
RE_UNC = r"^/files/\\[\\/]"  # \\host\share, \\?\D:\, \/x: refused as serve does
RE_FIRST_BACKSLASH = r"^([^\\]*)\\(.*)$"
RE_DOTDOT = r"/\.\.(/|$)"
# On the raw request target, before nginx decodes %XX and collapses "/./", "//" and "/../"
# (serve refuses any ".." and reads what precedes the drive as a POSIX path):
RE_RAW_DOTDOT = r"~*^[^?]*(?:/|\\|%2f|%5c)(?:\.|%2e){2}(?:/|\\|%2f|%5c|\?|$)"
RE_RAW_DRIVE = r"~*^/files/(?:[^/%?]|%[0-9a-f]{2})(?::|%3a)"
RE_BEARER = r"~^(?i:bearer)[ \t]+"
RE_PACKAGE = r"^/package/(?<datahubsync_name>[^/.][^/]*)\.zip$"
RE_MANIFEST = r"^/manifest/(?<datahubsync_name>[^/.][^/]*)\.json$"
RE_DELTA = r"^/delta/(?<datahubsync_name>[^/.][^/]*)/(?<datahubsync_span>[0-9_]+-[0-9_]+)\.zip$"
EMPTY_404 = "return 404 $datahubsync_empty;"


class NginxConfigError(ValueError):
    """The configuration cannot be expressed safely as nginx configuration."""


@dataclass(frozen=True)
class Settings:
    listen: str  # nginx "listen" parameter: "80", "127.0.0.1:8081", "[::]:80"
    upstream: str  # host:port of serve
    cache_dir: str  # realpath of the package store
    roots: tuple[Root, ...]
    tokens: tuple[str, ...]
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_body_bytes: int
    out_dir: str  # where the tokens file is (absolute), for the include
    # /files: nginx's open_file_cache keeps descriptors and stats this long (0 = off)
    file_cache_valid: int = 1


def quote(text: str) -> str:
    r"""``text`` as one nginx quoted string (``\`` and ``"`` escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pcre_literal(text: str) -> str:
    """A PCRE pattern matching ``text`` literally (every ASCII non-alphanumeric escaped)."""
    return "".join(c if c.isalnum() or ord(c) > 127 else "\\" + c for c in text)


def _caseless(text: str) -> str:
    """A pattern for ``text`` in any case (for use under ``~*``, which folds ASCII only)."""
    out = []
    for char in text:
        variants = sorted({char, char.lower(), char.upper()})
        if ord(char) > 127 and len(variants) > 1:
            out.append("(?:" + "|".join(variants) + ")")
        else:
            out.append(pcre_literal(char))
    return "".join(out)


def _path(text: str, what: str) -> str:
    if _FORBIDDEN_IN_PATHS.search(text):
        raise NginxConfigError(f"{what} {text!r}: a '$' or control character cannot be "
                               "written into nginx configuration")
    return text


def _token_pattern(token: str) -> str:
    if not token or token != token.strip() or re.search(r"[\x00-\x20\x7f]", token):
        raise NginxConfigError("serve.api_tokens: a token with whitespace or control "
                               "characters cannot be sent in a header")
    return pcre_literal(token)


def default_upstream(host: str, port: int) -> str:
    """serve's address as nginx reaches it: a wildcard listen address means loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def render_tokens(tokens: Sequence[str]) -> str:
    """The secret include: which ``X-API-Key`` / ``Authorization`` values ``/files`` accepts.

    As ``presented_token``: a non-empty ``X-API-Key`` is the token (a wrong one is
    not rescued by a right bearer), else ``Authorization: Bearer`` (scheme in any case).
    """
    patterns = [_token_pattern(t) for t in tokens]
    lines = ["# Generated by `datahubsync serve nginx-config` from serve.api_tokens.",
             "# SECRET: keep it mode 0600, owned by root; included by datahubsync.conf.",
             "map $http_authorization $datahubsync_bearer_ok {", "    default 0;"]
    lines += [f"    {quote(RE_BEARER + p + '$')} 1;" for p in patterns]
    lines += ["}", "map $http_x_api_key $datahubsync_token_ok {", "    default 0;",
              '    "" $datahubsync_bearer_ok;']
    lines += [f"    {quote('~^' + p + '$')} 1;" for p in patterns]
    lines += ["}", ""]
    return "\n".join(lines)


def _root_location(root: Root) -> list[str]:
    """One root: a regex on the normalised URI, case-insensitive for a drive's prefix."""
    label = split_client_path(root.label)
    assert label is not None  # checked by Root.make
    if label.is_drive:
        head, op = [_caseless(label.anchor[0]) + ":"] + [_caseless(p) for p in label.parts], "~*"
    else:
        head, op = [pcre_literal(p) for p in label.parts], "~"
    prefix = "/+".join(head)
    regex = "^/files/+" + (prefix + "/+" if prefix else "") + \
        "(?<datahubsync_rest>[^:/][^:]*)$"
    path = _path(root.path.rstrip("/"), f"picture root {root.label!r} ->")
    return [
        f"        # {root.label.replace(chr(10), ' ')} -> {path}",
        f"        location {op} {quote(regex)} {{",
        f"            disable_symlinks on {quote('from=' + (path or '/'))};",
        f"            alias {quote(path + '/$datahubsync_rest')};",
        f"            if ($datahubsync_raw_dotdot) {{ {EMPTY_404} }}",
        *([f"            if ($datahubsync_raw_drive = 0) {{ {EMPTY_404} }}"]
          if label.is_drive else []),
        f"            if (!-f $request_filename) {{ {EMPTY_404} }}",
        "        }",
    ]


def _file_cache(valid: int) -> list[str]:
    """nginx's open_file_cache for /files: the open, the stat and the symlink checks of a
    picture asked for again within ``valid`` seconds are not repeated (a fifth of the
    requests/s at 200 KB, bench/README.md). A picture replaced within that time may
    still be answered as it was; lookup errors are not kept, so a new picture is seen
    at once. Descriptors unused for 20 s are closed."""
    if valid <= 0:
        return []
    return ["        open_file_cache max=10000 inactive=20s;",
            f"        open_file_cache_valid {valid}s;"]


def _files_block(roots: Sequence[Root], file_cache_valid: int) -> list[str]:
    rewrite = f"            rewrite {quote(RE_FIRST_BACKSLASH)} $1/$2;"
    lines = [
        "    # Picture files: the mapping and the refusals of serve's /files (empty 404s).",
        "    location ^~ /files/ {",
        "        disable_symlinks on;",
        *_file_cache(file_cache_valid),
        "        error_page 301 403 404 = @datahubsync_files_404;",
        f"        location ~ {quote(RE_CONTROL)} {{ {EMPTY_404} }}",
        "        # D:\\pic\\a.jpg spelt with backslashes: made '/', then located again",
        f"        location ~ {quote(RE_BACKSLASH)} {{",
        f"            if ($uri ~ {quote(RE_UNC)}) {{ {EMPTY_404} }}",
        *[rewrite] * BACKSLASH_REWRITES,
        f"            if ($uri ~ {quote(RE_BACKSLASH)}) {{ {EMPTY_404} }}",
        "        }",
        f"        location ~ {quote(RE_DOTDOT)} {{ {EMPTY_404} }}",
    ]
    for root in roots:
        lines += _root_location(root)
    lines += ["        return 404 $datahubsync_empty;", "    }",
              "    # Pictures come from nginx's sendfile one GET each: a bundle would be",
              "    # proxied through to serve (measured slower than the GETs); this 404 is what",
              "    # a client takes to mean 'no bundles here'.",
              f"    location = {BUNDLE_PATH} {{ return 404 $datahubsync_empty; }}"]
    return lines


def render_main(s: Settings) -> str:
    """The http-level include: maps, upstream and the server block."""
    cache = _path(s.cache_dir.rstrip("/") or "/", "serve.cache_dir")
    tokens_path = _path(os.path.join(s.out_dir, TOKENS_FILE), "--out")
    types = " ".join(f"{mime} {ext};" for mime, ext in TYPES.items())
    lines = [
        "# Generated by `datahubsync serve nginx-config`: include it in nginx's http block.",
        "# nginx serves packages, manifests, deltas and picture files from disk; the rest",
        "# goes to serve, whose serve.trusted_proxies must list this nginx's address.",
        f"include {quote(tokens_path)};",
        "",
        "map $uri $datahubsync_empty { default \"\"; }",
        "map $uri $datahubsync_files_uri { default 0; \"~^/files/\" 1; }",
        f"map $request_uri $datahubsync_raw_dotdot {{ default 0; {quote(RE_RAW_DOTDOT)} 1; }}",
        f"map $request_uri $datahubsync_raw_drive {{ default 0; {quote(RE_RAW_DRIVE)} 1; }}",
        "map \"$datahubsync_files_uri:$datahubsync_token_ok\" $datahubsync_files_denied {",
        "    default 0;",
        "    \"1:0\" 1;",
        "}",
        "",
        "upstream datahubsync_serve {",
        *(f"    server {_path(u.strip(), '--upstream')};" for u in s.upstream.split(",")),
        "    keepalive 16;",
        "}",
        "",
        "server {",
        f"    listen {_path(s.listen, '--listen')};",
        "    server_tokens off;",
        f"    client_header_timeout {s.header_timeout:g}s;",
        f"    client_body_timeout {s.body_timeout:g}s;",
        f"    keepalive_timeout {s.keepalive_timeout:g}s;",
        f"    client_max_body_size {s.max_body_bytes};",
        f"    large_client_header_buffers 4 {HEADER_BUFFER};",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    max_ranges 1;  # several ranges get the whole file, as from serve",
        f"    types {{ {types} }}",
        "    default_type application/octet-stream;",
        "    log_not_found off;  # a missing file is an answer, not a server error",
        "",
    ]
    if s.roots:  # without roots serve has no /files route: its 404 through the proxy
        lines += [
            "    # /files needs a token of serve.api_tokens, checked before the path is looked at",
            "    error_page 401 @datahubsync_401;",
            "    if ($datahubsync_files_denied) { return 401; }",
            "    location @datahubsync_401 {",
            "        add_header WWW-Authenticate Bearer always;",
            "        return 401 $datahubsync_empty;",
            "    }",
            "    location @datahubsync_files_404 { return 404 $datahubsync_empty; }",
        ]
    for what, label in (("package", "Package"), ("manifest", "Manifest"), ("delta", "Delta")):
        lines += [f"    location @datahubsync_{what}_404 {{",
                  "        default_type application/json;",
                  f"        return 404 '{{\"error\": \"{label} not found\"}}';", "    }"]
    lines += [
        "",
        "    # The current package and manifest of a dataset: links the store replaces",
        "    # atomically on every publish (owned by serve's user, as their targets).",
        "    location ^~ /package/ {",
        f"        disable_symlinks if_not_owner {quote('from=' + cache)};",
        "        error_page 403 404 = @datahubsync_package_404;",
        f"        location ~ {quote(RE_PACKAGE)} {{",
        f"            alias {quote(cache + '/current/${datahubsync_name}.zip')};",
        "        }",
        "        return 404 '{\"error\": \"Package not found\"}';",
        "    }",
        "    location ^~ /manifest/ {",
        f"        disable_symlinks if_not_owner {quote('from=' + cache)};",
        "        error_page 403 404 = @datahubsync_manifest_404;",
        f"        location ~ {quote(RE_MANIFEST)} {{",
        f"            alias {quote(cache + '/current/${datahubsync_name}.manifest.json')};",
        "        }",
        "        return 404 '{\"error\": \"Manifest not found\"}';",
        "    }",
        "    location ^~ /delta/ {",
        f"        disable_symlinks on {quote('from=' + cache)};",
        "        error_page 403 404 = @datahubsync_delta_404;",
        f"        location ~ {quote(RE_DELTA)} {{",
        f"            alias {quote(cache + '/${datahubsync_name}_${datahubsync_span}.delta.zip')};",
        "        }",
        "        return 404 '{\"error\": \"Delta not found\"}';",
        "    }",
        "",
    ]
    if s.roots:
        lines += _files_block(s.roots, s.file_cache_valid) + [""]
    lines += [
        "    # Everything else (/api/..., /health, /metrics, /) is serve's.",
        "    location / {",
        "        proxy_pass http://datahubsync_serve;",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Connection \"\";",
        "        proxy_set_header Host $http_host;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_buffering off;",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def settings_from(cfg: ServeConfig, cache_dir: Path, listen: str, upstream: str | None,
                  out_dir: Path, file_cache_valid: int = 1) -> Settings:
    """Settings from ``serve``'s config section."""
    return Settings(
        listen=listen, upstream=upstream or default_upstream(cfg.host, cfg.port),
        cache_dir=os.path.realpath(cache_dir),
        roots=make_roots((r.prefix, r.path) for r in cfg.picture_roots),
        tokens=tuple(cfg.api_tokens), header_timeout=cfg.header_timeout,
        body_timeout=cfg.body_timeout, keepalive_timeout=cfg.keepalive_timeout,
        max_body_bytes=max(cfg.max_request_bytes, cfg.logs_ingest.max_body_bytes),
        out_dir=os.path.abspath(out_dir), file_cache_valid=file_cache_valid)


def write_config(s: Settings) -> tuple[Path, Path]:
    """Write both files into ``s.out_dir``; the tokens file first, so the include exists."""
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main, tokens = out / MAIN_FILE, out / TOKENS_FILE
    main_text, tokens_text = render_main(s), render_tokens(s.tokens)
    write_bytes_atomic(tokens, tokens_text.encode("utf-8"), mode=0o600)
    write_bytes_atomic(main, main_text.encode("utf-8"), mode=0o644)
    return main, tokens


def proxy_trusted(upstream: str, trusted_proxies: Sequence[str]) -> bool:
    """Whether serve will count this nginx's X-Forwarded-For (nginx connects from the
    upstream's loopback address when serve is local; otherwise we cannot tell)."""
    host = upstream.split(",")[0].strip().rsplit(":", 1)[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = ipaddress.ip_address("127.0.0.1") if host == "localhost" else None
    if address is None or not address.is_loopback:
        return any(trusted_proxies)
    return any(address in ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
