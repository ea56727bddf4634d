#!/bin/sh
# sync.sh — what cron runs at 08:15 (and datahubsync-sync.service, its systemd twin).
#
# Sets a sane PATH and umask, takes a lock (a second run exits 75 at once
# instead of piling up behind a slow one), runs `datahubsync datasets sync`
# with the deadline from the config (sync.max_time; DATAHUBSYNC_MAX_TIME
# overrides it), appends everything to the log, and exits with the tool's
# status so cron mail and monitoring see failures. On failure one line also
# goes to stderr: cron mails it.
#
# Environment (all optional): DATAHUBSYNC_BIN, DATAHUBSYNC_CONFIG,
# DATAHUBSYNC_SYNC_LOG, DATAHUBSYNC_SYNC_LOCK, DATAHUBSYNC_MAX_TIME.
set -u
umask 027
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

HERE=$(dirname "$(readlink -f "$0")")
BIN=${DATAHUBSYNC_BIN:-$HERE/datahubsync}
CONFIG=${DATAHUBSYNC_CONFIG:-/etc/datahubsync/config.yaml}
LOG=${DATAHUBSYNC_SYNC_LOG:-/var/log/datahubsync/sync.log}
LOCK=${DATAHUBSYNC_SYNC_LOCK:-/var/lib/datahubsync/sync.sh.lock}

stamp() { date '+%Y-%m-%d %H:%M:%S'; }

mkdir -p "$(dirname "$LOG")" "$(dirname "$LOCK")" 2>/dev/null
if ! : >>"$LOG" 2>/dev/null; then
    echo "sync.sh: cannot write the log $LOG" >&2
    exit 1
fi
exec 9>>"$LOCK" || { echo "sync.sh: cannot open the lock $LOCK" >&2; exit 1; }
if ! flock -n 9; then
    echo "$(stamp) sync.sh: another sync is still running (lock $LOCK); not starting" >>"$LOG"
    echo "sync.sh: another sync is still running (lock $LOCK)" >&2
    exit 75
fi
if [ ! -x "$BIN" ]; then
    echo "$(stamp) sync.sh: $BIN is missing or not executable" >>"$LOG"
    echo "sync.sh: $BIN is missing or not executable" >&2
    exit 1
fi

set -- --config "$CONFIG" datasets sync
if [ -n "${DATAHUBSYNC_MAX_TIME:-}" ]; then
    set -- "$@" --max-time "$DATAHUBSYNC_MAX_TIME"
fi
echo "$(stamp) sync.sh: start: $BIN $*" >>"$LOG"
"$BIN" "$@" >>"$LOG" 2>&1 9>&-
rc=$?
echo "$(stamp) sync.sh: end: exit $rc" >>"$LOG"
if [ "$rc" -ne 0 ]; then
    why=$(tail -n 200 "$LOG" | grep -E ' ERROR |error: ' | tail -n 1 | cut -c1-300)
    echo "datahubsync datasets sync failed with exit $rc${why:+: $why}; see $LOG" >&2
fi
exit "$rc"
