#!/bin/sh
# `make install` and `make uninstall` (README, "Operating a sensor"). Run from the checkout, as root.
#
# install: builds a wheel of this checkout and installs it, with its dependencies, into a
# virtual environment of its own at PREFIX (the signatures and the example policy are in
# the wheel); creates the system user SERVICE_USER; puts the example policy in SYSCONFDIR
# unless a policy is already there; installs the systemd unit into UNITDIR pointing at
# PREFIX. It checks first that SERVICE_USER runs PYTHON as root does, and last that it
# runs the installed copy. Run again to upgrade: the environment is built anew, the policy
# and the user are kept.
#
# uninstall: stops and removes the unit and PREFIX; keeps SYSCONFDIR, the logs and the user
# (an operator's policy and records outlive the program), and says how to remove them.
set -eu

PYTHON=${PYTHON:-python3}
PREFIX=${PREFIX:-/opt/tiktok-detector}
SYSCONFDIR=${SYSCONFDIR:-/etc/tiktok-detector}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SERVICE_USER=${SERVICE_USER:-tiktok-detector}
UNIT=tiktok-detector.service
# What the shipped unit names, replaced by the values above in the installed copy.
UNIT_PREFIX=/opt/tiktok-detector
UNIT_SYSCONFDIR=/etc/tiktok-detector
UNIT_USER=tiktok-detector

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

# systemd is running (not merely installed): only then are daemon-reload and disable useful.
systemd_running() {
    [ -d /run/systemd/system ]
}

# Files root creates here must be readable by the service user whatever root's umask is.
umask 022

[ "$(id -u)" = 0 ] || fail "run as root: it creates a system user and installs into $PREFIX"
case "$PREFIX$SYSCONFDIR$SERVICE_USER" in
    *[[:space:]]*) fail "PREFIX, SYSCONFDIR and SERVICE_USER must not contain spaces (the unit's command line)" ;;
esac
case "$PREFIX" in
    /*) ;;
    *) fail "PREFIX must be an absolute path, not $PREFIX" ;;
esac
# Refuse to clear or remove a directory that is not one of ours (PREFIX=/usr/local...).
if [ -e "$PREFIX" ] && [ -n "$(ls -A "$PREFIX")" ] && [ ! -e "$PREFIX/pyvenv.cfg" ]; then
    fail "$PREFIX exists and is not a virtual environment: choose another PREFIX"
fi

# Runs a command as the service user, in / (the checkout may be out of its reach).
as_service_user() {
    (cd / && setpriv --reuid="$SERVICE_USER" --regid="$group" --clear-groups --inh-caps=-all "$@")
}

install_all() {
    [ -f setup.py ] && [ -d detector ] || fail "run from the checkout (make install)"
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    group=$(id -gn "$SERVICE_USER")

    # The service user must run the interpreter the environment is made from, as root does:
    # a Python kept in a directory only root can enter (pyenv in /root) fails as that user,
    # or runs another interpreter's library.
    python=$("$PYTHON" -c 'import sys; print(sys.executable)')
    probe='import sys; print(sys.version.split()[0])'
    mine=$("$python" -c "$probe")
    theirs=$(as_service_user "$python" -c "$probe" 2>&1) || theirs="an error"
    if [ "$mine" != "$theirs" ]; then
        fail "$SERVICE_USER runs $python as Python $theirs, root as $mine: it is kept where" \
            "$SERVICE_USER cannot read it; install with a Python every user can read, e.g." \
            "make install PYTHON=/usr/bin/python3"
    fi

    "$PYTHON" -m venv --clear "$PREFIX"
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    # setuptools' scratch directory: files left there from another build would go into the wheel.
    rm -rf build
    # Built by the prefix's own Python, so the compiled skim matches the interpreter that runs it.
    "$PREFIX/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" .
    "$PREFIX/bin/python" -m pip install --quiet "$wheels"/tiktok_detector-*.whl
    rm -rf build

    install -d -m 0755 "$SYSCONFDIR"
    if [ ! -e "$SYSCONFDIR/policy.toml" ]; then
        install -m 0644 examples/policy.toml "$SYSCONFDIR/policy.toml"
    fi

    install -d -m 0755 "$UNITDIR"
    sed -e "s|$UNIT_PREFIX/|$PREFIX/|g" -e "s|$UNIT_SYSCONFDIR/|$SYSCONFDIR/|g" \
        -e "s|^User=$UNIT_USER\$|User=$SERVICE_USER|" -e "s|^Group=$UNIT_USER\$|Group=$group|" \
        "deploy/systemd/$UNIT" >"$UNITDIR/$UNIT.new"
    chmod 0644 "$UNITDIR/$UNIT.new"
    mv "$UNITDIR/$UNIT.new" "$UNITDIR/$UNIT"
    if systemd_running && [ "$UNITDIR" = /etc/systemd/system ]; then
        systemctl daemon-reload
    fi

    # And the copy as installed (a PREFIX below a directory it cannot enter fails here).
    mine=$(cd / && "$PREFIX/bin/tiktok-detector" --version)
    theirs=$(as_service_user "$PREFIX/bin/tiktok-detector" --version 2>&1) || true
    if [ "$mine" != "$theirs" ]; then
        fail "$SERVICE_USER cannot run $PREFIX/bin/tiktok-detector as root does: $(echo "$theirs" | tail -n 1)"
    fi
    echo "$mine" | sed -n 1p
    echo "installed in $PREFIX, policy in $SYSCONFDIR/policy.toml, unit $UNITDIR/$UNIT, user $SERVICE_USER"
}

uninstall_all() {
    if systemd_running && [ -e "$UNITDIR/$UNIT" ]; then
        systemctl disable --now "$UNIT" || true
    fi
    rm -f "$UNITDIR/$UNIT"
    if systemd_running && [ "$UNITDIR" = /etc/systemd/system ]; then
        systemctl daemon-reload
    fi
    rm -rf "$PREFIX"
    echo "removed $PREFIX and $UNITDIR/$UNIT"
    echo "kept $SYSCONFDIR, /var/log/tiktok-detector and the user $SERVICE_USER;" \
        "remove them with: rm -r $SYSCONFDIR /var/log/tiktok-detector; userdel $SERVICE_USER"
}

case "${1:-}" in
    install) install_all ;;
    uninstall) uninstall_all ;;
    *) fail "usage: install.sh install|uninstall" ;;
esac
