#!/usr/bin/env bash
# Install everything the ringrelay test suite talks to, on a bare Debian 12 machine, as root.
#
# Idempotent: packages that are already installed are skipped (and apt-get update is skipped
# when nothing is missing), so running it twice costs a second or two.
#
# System packages:
#   postfix    /usr/sbin/smtp-source (load generator), /usr/sbin/smtp-sink (a server for the
#              client tests), and a private instance that tests/relay_postfix.rs configures,
#              starts and stops itself; the system's own daemon is never configured nor started
#   swaks      SMTP transcripts (PIPELINING); libnet-ssleay-perl gives it STARTTLS
#   prometheus promtool, for checking the /metrics exposition and deploy/prometheus/'s rules
#   systemd    systemd-analyze, to verify deploy/systemd/ringrelay.service (nothing is started)
#   python3-yaml  PyYAML for /usr/bin/python3, to parse deploy/kubernetes/ (tests/deploy.rs)
#   haproxy    PROXY-protocol front end (tests/haproxy.rs runs deploy/haproxy/haproxy.cfg)
#   openssl    TLS test material (planned)
#   linux-perf profiling the benchmarks
#   python3-seccomp  denies io_uring_setup to test the epoll fallback (run by /usr/bin/python3)
# Python (pip): aiosmtpd, the maintained successor of the smtpd module, as a reference peer.
# The Python peer scripts in tests/peers/ otherwise only use the standard library.
# Mailman 3 core (pip, in its own venv: $MAILMAN_VENV, default ~/.cache/ringrelay-mailman-venv)
#   for tests/mailman.rs; SQLAlchemy < 2.1 (2.1 breaks Mailman 3.3's list queries).
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { printf 'install-test-deps: ERROR: %s\n' "$*" >&2; exit 1; }

APT_PACKAGES=(postfix swaks libnet-ssleay-perl prometheus haproxy openssl linux-perf python3-seccomp
    systemd python3-yaml)

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
    command -v sudo >/dev/null || die "not root and no sudo: run this script as root"
else
    SUDO=
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Postfix must neither prompt nor start: preseed "No configuration" and forbid service
    # starts for the duration of the install with a policy-rc.d that says "no" (exit 101).
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    echo "postfix postfix/mailname string localhost" | $SUDO debconf-set-selections
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    cleanup() {
        if [ "$policy_created" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
    }
    trap cleanup EXIT
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        --no-install-recommends "${missing[@]}"
    cleanup
    trap - EXIT
else
    log "system packages already installed: ${APT_PACKAGES[*]}"
fi

# Python peers: the tests run whatever `python3` is first on PATH, so install into that one.
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || die "$PYTHON not found on PATH"
if ! "$PYTHON" -c 'import aiosmtpd' 2>/dev/null; then
    log "pip install aiosmtpd (into $(command -v "$PYTHON"))"
    if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore aiosmtpd 2>/dev/null; then
        # Debian's own python3 is "externally managed" (PEP 668); this attempt shows any error.
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --break-system-packages aiosmtpd
    fi
else
    log "python: aiosmtpd already installed"
fi

# Mailman 3 core in a venv of its own (tests/mailman_kit finds it there; about a minute the
# first time, skipped afterwards).
MAILMAN_VENV=${MAILMAN_VENV:-$HOME/.cache/ringrelay-mailman-venv}
MAILMAN_PIN=(mailman==3.3.10 'sqlalchemy<2.1')
if ! "$MAILMAN_VENV/bin/python" -c 'import mailman, sqlalchemy' 2>/dev/null; then
    log "pip install ${MAILMAN_PIN[*]} (venv $MAILMAN_VENV)"
    "$PYTHON" -m venv "$MAILMAN_VENV"
    "$MAILMAN_VENV/bin/pip" install --quiet --disable-pip-version-check "${MAILMAN_PIN[@]}"
else
    log "python: Mailman 3 already installed in $MAILMAN_VENV"
fi

# Fail loudly if anything the tests rely on is still missing.
fail=0
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        log "ok: $what"
    else
        printf 'install-test-deps: MISSING: %s (check: %s)\n' "$what" "$*" >&2
        fail=1
    fi
}
check "smtp-source (postfix)" test -x /usr/sbin/smtp-source
check "smtp-sink (postfix)" test -x /usr/sbin/smtp-sink
check "swaks" swaks --version
check "promtool (prometheus)" promtool --version
check "haproxy" haproxy -v
check "openssl" openssl version
check "perf (linux-perf)" perf --version
check "python3 >= 3.8" "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 8)'
check "python smtplib/asyncio" "$PYTHON" -c 'import smtplib, asyncio, email.policy'
check "python aiosmtpd" "$PYTHON" -c 'import aiosmtpd'
check "python smtpd module (< 3.12)" "$PYTHON" -W ignore -c 'import smtpd'
check "python3-seccomp (system python)" /usr/bin/python3 -c 'import seccomp'
check "systemd-analyze (systemd)" systemd-analyze --version
check "python3-yaml (system python)" /usr/bin/python3 -c 'import yaml'
check "mailman 3 (venv)" "$MAILMAN_VENV/bin/mailman" --version
# The postfix daemon must not be running (nothing here needs it; port 25 stays free).
if pgrep -x master >/dev/null 2>&1 && [ -e /var/spool/postfix/pid/master.pid ]; then
    log "note: a postfix master process is running; the tests do not need it"
fi
[ "$fail" = 0 ] || die "some test dependencies are missing (see above)"
log "all test dependencies present"
