#!/bin/sh
# install_client.sh — install datahubsync on a server (every step idempotent).
#
#   sudo ./install_client.sh --setup-crontab            # the usual: binary, dirs, cron 08:15
#   sudo ./install_client.sh --config my.yaml --setup-systemd --setup-logrotate --sync
#   ./install_client.sh --root /tmp/img --user root ...  # into a directory tree (tests, images)
#   sudo ./install_client.sh --uninstall [--purge]
#
# Options:
#   --prefix DIR        where the binary and scripts go (default /opt/datahubsync)
#   --root DIR          install into DIR as if it were / (no user creation, no systemctl)
#   --binary PATH       the frozen binary (a file, or an onedir folder); default:
#                       ./datahubsync next to this script, else ./dist/datahubsync
#   --config FILE       install FILE as /etc/datahubsync/config.yaml (mode 0600)
#   --user NAME         service user (default datahubsync; created when missing)
#   --setup-crontab     /etc/cron.d/datahubsync runs sync.sh on --schedule
#   --schedule "M H * * *"   cron schedule (default "15 8 * * *")
#   --setup-systemd     install the units (serve, pictures, logs, sync + timer)
#   --setup-logrotate   /etc/logrotate.d/datahubsync
#   --sync              run sync.sh once at the end
#   --uninstall         remove binary, scripts, cron, units, logrotate (keeps config,
#                       state and logs unless --purge)
#   --dry-run           print what would be done, change nothing
#
# Exit status: 0 done, 1 a step failed, 2 bad usage or invalid config.
set -eu

PREFIX=/opt/datahubsync
ROOT=
BINARY=
CONFIG=
SVC_USER=datahubsync
SCHEDULE="15 8 * * *"
CRON=0 SYSTEMD=0 LOGROTATE=0 SYNC=0 UNINSTALL=0 PURGE=0 DRY=0
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "install_client.sh: error: $1" >&2; exit "${2:-1}"; }
say() { echo "$*"; }
run() {  # run a command, or print it with --dry-run
    if [ "$DRY" = 1 ]; then echo "would run: $*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
        --config) CONFIG=${2:?--config needs a file}; shift 2 ;;
        --user) SVC_USER=${2:?--user needs a name}; shift 2 ;;
        --schedule) SCHEDULE=${2:?--schedule needs a cron schedule}; shift 2 ;;
        --setup-crontab) CRON=1; shift ;;
        --setup-systemd) SYSTEMD=1; shift ;;
        --setup-logrotate) LOGROTATE=1; shift ;;
        --sync) SYNC=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" 2 ;;
    esac
done

case "$SCHEDULE" in
    *[!0-9\*/,\ -]*) die "--schedule '$SCHEDULE': only digits, * / , - and spaces" 2 ;;
esac
[ "$(echo "$SCHEDULE" | wc -w)" -eq 5 ] || die "--schedule '$SCHEDULE' needs 5 fields" 2
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ] && [ "$DRY" = 0 ]; then
    die "run as root (sudo), or use --root DIR to install into a directory tree" 2
fi

R=${ROOT%/}
ETC=$R/etc/datahubsync
STATE=$R/var/lib/datahubsync
LOGS=$R/var/log/datahubsync
DEST=$R$PREFIX
CRON_FILE=$R/etc/cron.d/datahubsync
UNIT_DIR=$R/etc/systemd/system
LOGROTATE_FILE=$R/etc/logrotate.d/datahubsync
UNITS="datahubsync-serve.service datahubsync-pictures.service datahubsync-logs.service
datahubsync-sync.service datahubsync-sync.timer"

# put_file SRC DEST MODE: copy when different; says created/updated/unchanged
put_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        run chmod "$3" "$2"
        say "unchanged $2"
        return
    fi
    verb=created; [ -e "$2" ] && verb=updated
    run mkdir -p "$(dirname "$2")"
    run install -m "$3" "$1" "$2"
    say "$verb $2"
}

# put_text DEST MODE: stdin to DEST when different
put_text() {
    tmp=$(mktemp)
    cat >"$tmp"
    put_file "$tmp" "$1" "$2"
    rm -f "$tmp"
}

user_exists() { id "$1" >/dev/null 2>&1; }

own() {  # own OWNER PATH...: chown when the user exists here
    owner=$1; shift
    if user_exists "$owner"; then run chown "$owner:$(id -gn "$owner")" "$@"; fi
}

if [ "$UNINSTALL" = 1 ]; then
    for path in "$CRON_FILE" "$LOGROTATE_FILE" "$DEST/sync.sh" "$DEST/test_client.sh" \
                "$DEST/datahubsync" "$DEST/lib"; do
        if [ -e "$path" ] || [ -L "$path" ]; then run rm -rf "$path"; say "removed $path"; fi
    done
    for unit in $UNITS; do
        if [ -e "$UNIT_DIR/$unit" ]; then
            if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
                run systemctl disable --now "$unit" >/dev/null 2>&1 || true
            fi
            run rm -f "$UNIT_DIR/$unit"; say "removed $UNIT_DIR/$unit"
        fi
    done
    for name in sync serve pictures logs; do run rm -rf "$UNIT_DIR/datahubsync-$name.service.d"; done
    if [ "$PURGE" = 1 ]; then
        for path in "$ETC" "$STATE" "$LOGS"; do run rm -rf "$path"; say "purged $path"; done
    else
        say "kept $ETC, $STATE and $LOGS (--purge removes them)"
    fi
    rmdir "$DEST" 2>/dev/null || true
    exit 0
fi

# --- the binary -------------------------------------------------------------
if [ -z "$BINARY" ]; then
    for candidate in "$HERE/datahubsync" "$HERE/dist/datahubsync"; do
        if [ -e "$candidate" ]; then BINARY=$candidate; break; fi
    done
fi
[ -n "$BINARY" ] || die "no binary found next to this script; build it (make binary) or pass --binary PATH" 2
[ -e "$BINARY" ] || die "binary $BINARY not found" 2
if [ -d "$BINARY" ]; then
    [ -x "$BINARY/datahubsync" ] || die "$BINARY is a folder without a datahubsync executable" 2
    PROBE=$BINARY/datahubsync
else
    [ -x "$BINARY" ] || die "binary $BINARY is not executable" 2
    PROBE=$BINARY
fi
"$PROBE" --version >/dev/null 2>&1 || die "$BINARY does not run (wrong architecture or a broken build?)"

# --- the config is checked before anything is installed ----------------------
if [ -n "$CONFIG" ]; then
    [ -f "$CONFIG" ] || die "config $CONFIG not found" 2
    CHECK=$CONFIG
elif [ -f "$ETC/config.yaml" ]; then
    CHECK=$ETC/config.yaml
else
    CHECK=
fi
if [ -n "$CHECK" ]; then
    set +e
    out=$("$PROBE" --config "$CHECK" doctor --min-free 1 2>&1)
    rc=$?
    set -e
    case $rc in
        0) say "config $CHECK: doctor passed" ;;
        2) echo "$out" >&2; die "config $CHECK is invalid (see above); nothing was installed" 2 ;;
        *) echo "$out" | grep -v '^PASS' >&2 || true
           say "config $CHECK: valid; doctor reported the problems above (install goes on)" ;;
    esac
fi

# --- user and directories --------------------------------------------------
if ! user_exists "$SVC_USER"; then
    if [ -n "$ROOT" ]; then
        say "note: user $SVC_USER does not exist on this host; files stay owned by $(id -un)"
    else
        run useradd --system --home-dir /var/lib/datahubsync --no-create-home \
            --shell /usr/sbin/nologin "$SVC_USER"
        say "created user $SVC_USER"
    fi
fi
run mkdir -p "$DEST" "$ETC" "$STATE" "$LOGS"
run chmod 0755 "$DEST"
run chmod 0750 "$ETC" "$STATE" "$LOGS"
own "$SVC_USER" "$STATE" "$LOGS"
if user_exists "$SVC_USER"; then run chgrp "$(id -gn "$SVC_USER")" "$ETC"; fi

if [ -d "$BINARY" ]; then  # onedir build: the folder under lib/, a link to its executable
    if [ -d "$DEST/lib" ] && diff -rq "$BINARY" "$DEST/lib" >/dev/null 2>&1; then
        say "unchanged $DEST/lib"
    else
        run rm -rf "$DEST/lib.new"
        run cp -a "$BINARY" "$DEST/lib.new"
        run rm -rf "$DEST/lib"
        run mv "$DEST/lib.new" "$DEST/lib"
        say "installed $DEST/lib"
    fi
    if [ "$(readlink "$DEST/datahubsync" 2>/dev/null)" != "lib/datahubsync" ]; then
        run rm -f "$DEST/datahubsync"
        run ln -s lib/datahubsync "$DEST/datahubsync"
    fi
else
    if [ -L "$DEST/datahubsync" ]; then run rm -f "$DEST/datahubsync"; fi
    put_file "$BINARY" "$DEST/datahubsync" 0755
fi
for script in sync.sh test_client.sh; do
    put_file "$HERE/$script" "$DEST/$script" 0755
done
if [ -n "$CONFIG" ]; then
    put_file "$CONFIG" "$ETC/config.yaml" 0600
    own "$SVC_USER" "$ETC/config.yaml"
elif [ ! -f "$ETC/config.yaml" ] && [ -f "$HERE/config_client_example.yaml" ]; then
    put_file "$HERE/config_client_example.yaml" "$ETC/config.yaml.example" 0640
    say "no config yet: edit $ETC/config.yaml.example and save it as $ETC/config.yaml (0600)"
fi

# --- an old client here: carry its config and state over (nothing of it is deleted) ---
if [ -f "$DEST/config.yaml" ] || [ -f "$DEST/.last_sync.json" ] || [ -f "$DEST/last_sync.json" ]
then
    say "found the old client in $DEST; carrying its config and state over"
    set -- --to "$ETC/config.yaml" --state-dir "${STATE#"$R"}" --write-state-dir "$STATE"
    if [ "$DRY" = 1 ]; then set -- "$@" --dry-run; fi
    "$PROBE" config upgrade-from "$DEST" "$@" || die "carrying the old client's state over failed"
    if [ -f "$STATE/.last_sync.json" ]; then own "$SVC_USER" "$STATE/.last_sync.json"; fi
    if [ -f "$ETC/config.yaml" ]; then own "$SVC_USER" "$ETC/config.yaml"; fi
fi

# --- schedule, units, logrotate ------------------------------------------------
if [ "$CRON" = 1 ]; then
    put_text "$CRON_FILE" 0644 <<CRONTAB
# datahubsync: daily datasets sync (installed by install_client.sh; edit with --schedule)
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$SCHEDULE $SVC_USER $PREFIX/sync.sh
CRONTAB
    # The old client's installer put the same job in root's own crontab: move it here
    # (only that line goes; every other line stays as it is).
    if [ -z "$ROOT" ] && command -v crontab >/dev/null 2>&1 \
            && crontab -l 2>/dev/null | grep -q "$PREFIX/sync.sh"; then
        if [ "$DRY" = 1 ]; then
            echo "would remove the $PREFIX/sync.sh line from root's crontab"
        else
            crontab -l 2>/dev/null | grep -v "$PREFIX/sync.sh" | crontab -
            say "moved the old $PREFIX/sync.sh line out of root's crontab"
        fi
    fi
fi
if [ "$SYSTEMD" = 1 ]; then
    for unit in $UNITS; do
        sed "s#/opt/datahubsync#$PREFIX#g; s#^User=datahubsync#User=$SVC_USER#; s#^Group=datahubsync#Group=$SVC_USER#" \
            "$HERE/packaging/systemd/$unit" | put_text "$UNIT_DIR/$unit" 0644
    done
    # Each unit may write only where its config points (ProtectSystem=strict): one drop-in
    # per unit from `datahubsync config write-paths`, and those directories created for
    # the service user (a unit cannot create a directory under a read-only parent).
    if [ -f "$ETC/config.yaml" ]; then
        for name in sync serve pictures logs; do
            paths=$("$PROBE" --config "$ETC/config.yaml" --json config write-paths --unit "$name" \
                    2>/dev/null | sed -n 's/.*"path": "\(.*\)",*$/\1/p')
            [ -n "$paths" ] || continue
            line=
            for dir in $paths; do
                if [ ! -e "$ROOT$dir" ]; then
                    run mkdir -p "$ROOT$dir"; own "$SVC_USER" "$ROOT$dir"
                    say "created $dir (written by datahubsync-$name)"
                fi
                line="$line $dir"
            done
            printf '[Service]\nReadWritePaths=%s\n' "${line# }" \
                | put_text "$UNIT_DIR/datahubsync-$name.service.d/write-paths.conf" 0644
        done
        run rm -f "$UNIT_DIR/datahubsync-sync.service.d/datasets.conf"  # older installs'
    fi
    if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        run systemctl daemon-reload
        say "enable what this host runs, e.g.: systemctl enable --now datahubsync-sync.timer"
    fi
fi
if [ "$LOGROTATE" = 1 ]; then
    sed "s#datahubsync datahubsync#$SVC_USER $SVC_USER#g" "$HERE/packaging/logrotate/datahubsync" \
        | put_text "$LOGROTATE_FILE" 0644
fi

if [ "$SYNC" = 1 ]; then
    [ -f "$ETC/config.yaml" ] || die "--sync: no $ETC/config.yaml to sync with"
    say "running $DEST/sync.sh once"
    if user_exists "$SVC_USER" && [ "$(id -u)" = 0 ] && [ "$SVC_USER" != root ]; then
        run runuser -u "$SVC_USER" -- env DATAHUBSYNC_CONFIG="$ETC/config.yaml" \
            DATAHUBSYNC_SYNC_LOG="$LOGS/sync.log" DATAHUBSYNC_SYNC_LOCK="$STATE/sync.sh.lock" \
            "$DEST/sync.sh"
    else
        run env DATAHUBSYNC_CONFIG="$ETC/config.yaml" DATAHUBSYNC_SYNC_LOG="$LOGS/sync.log" \
            DATAHUBSYNC_SYNC_LOCK="$STATE/sync.sh.lock" "$DEST/sync.sh"
    fi
fi
say "done"
