#!/bin/sh
# test_client.sh — pre-deployment check of a datahubsync client, for an operator.
#
#   sudo /opt/datahubsync/test_client.sh [--root DIR] [--prefix DIR] [--user NAME]
#
# Prints PASS/FAIL (and WARN) per check and exits 1 when any check FAILs:
# the binary runs; the config is valid and private (0600); state and log
# directories exist and belong to the service user; then `datahubsync doctor`
# (directories writable, free disk, hub reachable and healthy, clock skew
# against the hub's Date header); and the daily sync is scheduled (cron.d
# file or an enabled systemd timer).
set -u
PREFIX=/opt/datahubsync
ROOT=
SVC_USER=datahubsync
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --root) ROOT=$2; shift 2 ;;
        --user) SVC_USER=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "test_client.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
R=${ROOT%/}
BIN=$R$PREFIX/datahubsync
CONFIG=$R/etc/datahubsync/config.yaml
FAILED=0

pass() { echo "PASS  $1"; }
fail() { echo "FAIL  $1"; [ -n "${2:-}" ] && echo "      fix: $2"; FAILED=1; }
warn() { echo "WARN  $1"; }

if version=$("$BIN" --version 2>&1); then
    pass "binary: $version ($BIN)"
else
    fail "binary: $BIN does not run: $version" "reinstall with install_client.sh --binary PATH"
fi

if [ ! -f "$CONFIG" ]; then
    fail "config: $CONFIG is missing" "install_client.sh --config FILE"
else
    mode=$(stat -c %a "$CONFIG")
    case "$mode" in
        600|400) pass "config: $CONFIG is private ($mode)" ;;
        *) fail "config: $CONFIG is mode $mode; it may hold API keys" "chmod 600 $CONFIG" ;;
    esac
fi

for dir in "$R/var/lib/datahubsync" "$R/var/log/datahubsync"; do
    if [ ! -d "$dir" ]; then
        fail "directory $dir is missing" "install_client.sh creates it"
    elif id "$SVC_USER" >/dev/null 2>&1 && [ "$(stat -c %U "$dir")" != "$SVC_USER" ]; then
        fail "directory $dir belongs to $(stat -c %U "$dir"), not $SVC_USER" \
             "chown -R $SVC_USER $dir"
    else
        pass "directory $dir"
    fi
done

if [ -f "$CONFIG" ] && [ -x "$BIN" ]; then
    out=$("$BIN" --config "$CONFIG" doctor 2>&1)
    rc=$?
    if [ "$rc" = 2 ]; then
        fail "config: invalid: $(echo "$out" | tail -1)" "fix the key it names"
    else
        echo "$out" | sed -n 's/^PASS  /PASS  doctor: /p; s/^FAIL  /FAIL  doctor: /p; s/^      fix:/      fix:/p'
        [ "$rc" = 0 ] || FAILED=1
    fi
fi

if [ -f "$R/etc/cron.d/datahubsync" ] && grep -q "sync.sh" "$R/etc/cron.d/datahubsync"; then
    pass "schedule: $(grep sync.sh "$R/etc/cron.d/datahubsync" | head -1)"
elif [ -z "$R" ] && command -v systemctl >/dev/null 2>&1 \
        && systemctl is-enabled datahubsync-sync.timer >/dev/null 2>&1; then
    pass "schedule: datahubsync-sync.timer is enabled"
elif command -v crontab >/dev/null 2>&1 && crontab -l 2>/dev/null | grep -q "sync.sh"; then
    pass "schedule: root's crontab runs sync.sh"
else
    fail "schedule: no cron line and no enabled timer runs sync.sh" \
         "install_client.sh --setup-crontab (or --setup-systemd and enable the timer)"
fi

if [ "$FAILED" = 0 ]; then echo "all checks passed"; else echo "some checks FAILED"; fi
exit "$FAILED"
