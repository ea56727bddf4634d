#!/bin/sh
# Build dist/datahubsync (one file) from pinned versions.
#   packaging/build.sh [onefile|onedir]    (default onefile)
# Uses the project's virtualenv (.venv, made by `make venv`) with the `build`
# extra from constraints.txt, so the binary holds exactly the pinned versions.
set -eu
cd "$(dirname "$0")/.."
LAYOUT="${1:-onefile}"
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "build.sh: $PY not found; run 'make venv' first" >&2
    exit 2
fi
DIST=dist; [ "$LAYOUT" = onedir ] && DIST=dist/onedir
# PyInstaller only: the package itself is taken from this checkout (the spec's pathex), so
# building from another checkout never re-points the virtualenv's installed package.
"$PY" -c "import PyInstaller" 2>/dev/null || \
    "$PY" -m pip install --quiet -c constraints.txt pyinstaller pyinstaller-hooks-contrib
DATAHUBSYNC_LAYOUT="$LAYOUT" "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath build/pyinstaller-"$LAYOUT" packaging/datahubsync.spec
if [ "$LAYOUT" = onedir ]; then BIN=dist/onedir/datahubsync/datahubsync; else BIN=dist/datahubsync; fi
"$BIN" --version
echo "built $BIN ($(du -sh "$BIN" | cut -f1))"
