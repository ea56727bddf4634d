"""Raw deflate/inflate (wbits=-15, as ZIP members hold it) by zlib, zlib-ng or ISA-L.

All three write and read the same standard deflate streams, so a package is a
plain ZIP whichever codec built it and whichever one extracts it; they differ in
speed and, when compressing, in size. A codec whose module cannot be imported
(not installed, or left out of a frozen build) falls back to zlib with one
warning per process: the data is the same, only slower.
"""

from __future__ import annotations

import importlib
import logging
import threading
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

log = logging.getLogger(__name__)

Codec = Literal["zlib", "zlib-ng", "isal"]
CODECS: tuple[str, ...] = ("zlib", "zlib-ng", "isal")
# zlib-ng at level 6 builds stock-CSV packages ~3x as fast as zlib at 6, only ~1.5 %
# larger; isal is ~7-11x as fast but 6-9 % larger, and every client downloads a
# package the hub builds once: zlib-ng is the default (bench/bench_codecs.py).
DEFAULT_CODEC: Codec = "zlib-ng"
# Client side: the fastest inflater first (bench/bench_codecs.py: on stock CSVs isal
# reads members ~2.3x as fast as zlib, zlib-ng ~1.6x); zlib when neither imports.
INFLATE_ORDER: tuple[str, ...] = ("isal", "zlib-ng")
_MODULES = {"zlib": "zlib", "zlib-ng": "zlib_ng.zlib_ng", "isal": "isal.isal_zlib"}

_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}
_warned: set[str] = set()


def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def _try(codec: str) -> ModuleType | None:
    """The codec's module, or None when it cannot be imported (remembered)."""
    with _lock:
        if codec not in _loaded:
            try:
                _loaded[codec] = _import(_MODULES[codec])
            except ImportError as exc:
                log.debug("deflate codec %s unavailable: %s", codec, exc)
                _loaded[codec] = None
        return _loaded[codec]


def _warn_once(key: str, message: str, *args: object) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


def module(codec: str) -> tuple[str, ModuleType]:
    """(codec actually used, its zlib-like module): ``codec``, or zlib if it is missing."""
    if codec not in _MODULES:
        raise ValueError(f"unknown deflate codec {codec!r}; one of {', '.join(CODECS)}")
    mod = _try(codec)
    if mod is not None:
        return codec, mod
    _warn_once(codec, "deflate codec %s is not available (module %s not importable); "
               "using zlib", codec, _MODULES[codec])
    return "zlib", zlib


def level_for(codec: str, level: int) -> int:
    """Map zlib's 0-9 onto the codec's range; isal has 0-3: 0 -> 0, 1-2 -> 1, 3-5 -> 2,
    6-9 -> 3 (zlib's default 6 gets isal's smallest output: on stock CSVs its 1 and 2
    write the same bytes, and 3 is ~2.5 % smaller for ~1.5x their time). isal's 0 still
    compresses, unlike zlib's."""
    level = min(max(level, 0), 9)
    if codec == "isal":
        return 0 if level == 0 else min(3, level // 3 + 1)
    return level


def compressor(codec: str, level: int) -> tuple[Callable[[], Any], Callable[..., int]]:
    """(factory of raw-deflate compress objects, crc32) for ``codec`` at zlib ``level``.

    The crc32 is the codec's own (same values as zlib's, faster in zlib-ng and isal).
    """
    used, mod = module(codec)
    mapped = level_for(used, level)
    return (lambda: mod.compressobj(mapped, mod.DEFLATED, -15)), mod.crc32


def inflater() -> tuple[str, ModuleType]:
    """(name, module) of the fastest inflater available; zlib, said once, when none is."""
    for codec in INFLATE_ORDER:
        if (mod := _try(codec)) is not None:
            return codec, mod
    _warn_once("inflate", "no fast inflater (%s) importable; inflating with zlib",
               ", ".join(INFLATE_ORDER) or "none configured")
    return "zlib", zlib


def errors() -> tuple[type[BaseException], ...]:
    """What a corrupt stream raises, from any codec loaded so far (zlib-ng's and isal's
    errors are not subclasses of zlib.error)."""
    found: list[type[BaseException]] = [zlib.error]
    with _lock:
        mods = [m for m in _loaded.values() if m is not None]
    for mod in mods:
        err = getattr(mod, "error", None)
        if isinstance(err, type) and err not in found:
            found.append(err)
    return tuple(found)


def reset() -> None:
    """Forget what was imported and warned (tests simulate a missing module)."""
    with _lock:
        _loaded.clear()
        _warned.clear()
