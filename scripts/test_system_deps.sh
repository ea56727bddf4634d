#!/bin/sh
# System packages the test suite talks to that a fresh Debian machine may lack.
# openssh-server (tests/test_deploy.py runs packaging/deploy.sh against a real sshd),
# nginx (tests/test_nginx.py runs the generated front-end), chromium (the fleet page
# in a headless browser), prometheus (promtool checks the alert rules). Installed only
# when missing, as root, with apt-get; otherwise the tests that need them skip with the
# reason (or fail under CI=true).
set -eu
missing=""
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
[ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
[ -n "$missing" ] || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing test dependencies:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && \
             apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
else
    echo "note: missing$missing (not root or no apt-get): the tests needing it will skip" >&2
fi
