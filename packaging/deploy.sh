#!/bin/sh
# deploy.sh — roll datahubsync out to a fleet over ssh.
#
#   packaging/deploy.sh --hosts hosts.txt [--binary dist/datahubsync] [--config prod.yaml]
#                       [--ssh-user root] [--port 22] [--identity KEY] [--keep-going]
#                       [--dry-run] [-- INSTALL_CLIENT_ARGS...]
#
# hosts.txt: one host per line (name, IP or user@host); blank lines and # comments
# are skipped. For each host: copy the binary, the scripts, the unit files and the
# config into a temporary directory there (one tar stream over ssh), run
# install_client.sh with the arguments after `--` (default: --setup-crontab), then
# remove the temporary directory. Stops at the first failing host unless
# --keep-going; prints a summary per host; exits 1 when any host failed, 2 on bad
# usage. The remote side needs root (ssh as root, or a user with passwordless sudo).
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
HOSTS= BINARY=$HERE/dist/datahubsync CONFIG= SSH_USER= PORT=22 IDENTITY=
KEEP_GOING=0 DRY=0

die() { echo "deploy.sh: error: $1" >&2; exit "${2:-2}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) HOSTS=${2:?}; shift 2 ;;
        --binary) BINARY=${2:?}; shift 2 ;;
        --config) CONFIG=${2:?}; shift 2 ;;
        --ssh-user) SSH_USER=${2:?}; shift 2 ;;
        --port) PORT=${2:?}; shift 2 ;;
        --identity) IDENTITY=${2:?}; shift 2 ;;
        --keep-going) KEEP_GOING=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$HOSTS" ] || die "--hosts FILE is required"
[ -f "$HOSTS" ] || die "hosts file $HOSTS not found"
[ -e "$BINARY" ] || die "binary $BINARY not found (make binary)"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "config $CONFIG not found"
[ $# -gt 0 ] || set -- --setup-crontab

SSH_OPTS="-p $PORT -o BatchMode=yes -o ConnectTimeout=10"
[ -n "$IDENTITY" ] && SSH_OPTS="$SSH_OPTS -i $IDENTITY"
[ -n "${DEPLOY_SSH_OPTIONS:-}" ] && SSH_OPTS="$SSH_OPTS $DEPLOY_SSH_OPTIONS"

# The bundle: what install_client.sh needs next to it.
BUNDLE=$(mktemp -d)
trap 'rm -rf "$BUNDLE"' EXIT
mkdir -p "$BUNDLE/packaging"
cp -a "$BINARY" "$BUNDLE/datahubsync"
cp "$HERE/install_client.sh" "$HERE/sync.sh" "$HERE/test_client.sh" \
   "$HERE/config_client_example.yaml" "$BUNDLE/"
cp -a "$HERE/packaging/systemd" "$HERE/packaging/logrotate" "$BUNDLE/packaging/"
[ -n "$CONFIG" ] && cp "$CONFIG" "$BUNDLE/config.yaml" && set -- --config config.yaml "$@"

quote() {  # single-quote each argument for the remote shell
    for arg in "$@"; do printf " '%s'" "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")"; done
}
INSTALL_ARGS=$(quote "$@")

deploy_one() {
    target=$1
    case "$target" in *@*) ;; *) [ -n "$SSH_USER" ] && target="$SSH_USER@$target" ;; esac
    # shellcheck disable=SC2086
    remote=$(ssh $SSH_OPTS "$target" 'mktemp -d /tmp/datahubsync-deploy.XXXXXX') \
        || { echo "connect"; return 1; }
    # shellcheck disable=SC2086
    tar -C "$BUNDLE" -cf - . | ssh $SSH_OPTS "$target" "tar -C '$remote' -xf -" \
        || { echo "copy"; return 1; }
    sudo=""; case "$target" in root@*) ;; *) sudo="sudo -n" ;; esac
    # shellcheck disable=SC2086
    ssh $SSH_OPTS "$target" "cd '$remote' && $sudo ./install_client.sh --binary ./datahubsync$INSTALL_ARGS; rc=\$?; rm -rf '$remote'; exit \$rc" \
        >"$BUNDLE.log.$$" 2>&1 || { echo "install"; return 1; }
    echo "ok"
}

SUMMARY= FAILED=0 TOTAL=0
while read -r line || [ -n "$line" ]; do
    host=$(echo "$line" | sed 's/#.*//' | tr -d '[:space:]')
    [ -n "$host" ] || continue
    TOTAL=$((TOTAL + 1))
    if [ "$DRY" = 1 ]; then
        echo "would deploy to $host: install_client.sh$INSTALL_ARGS"
        SUMMARY="$SUMMARY$host: dry-run\n"
        continue
    fi
    echo "== $host"
    if result=$(deploy_one "$host" </dev/null); then
        sed 's/^/   /' "$BUNDLE.log.$$"
        SUMMARY="$SUMMARY$host: OK\n"
    else
        [ -f "$BUNDLE.log.$$" ] && sed 's/^/   /' "$BUNDLE.log.$$" >&2
        SUMMARY="$SUMMARY$host: FAILED ($result)\n"
        FAILED=$((FAILED + 1))
        if [ "$KEEP_GOING" = 0 ]; then
            echo "stopping after the first failure (--keep-going goes on)" >&2
            break
        fi
    fi
    rm -f "$BUNDLE.log.$$"
done <"$HOSTS"
rm -f "$BUNDLE.log.$$"

echo "summary:"
printf "$SUMMARY" | sed 's/^/  /'
[ "$TOTAL" -gt 0 ] || die "no hosts in $HOSTS"
[ "$FAILED" = 0 ] || exit 1
