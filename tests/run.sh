#!/usr/bin/env bash
# Install everything the test suite needs, then run it.
#   bash tests/run.sh [pytest arguments]
# Debian packages come from apt (as root, or through sudo); Python packages
# from PyPI into a virtual environment of the project's own, .venv (a stock
# Debian python3 refuses pip installs: externally-managed-environment).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and tools the integration tests drive.
# slapd + ldap-utils: tests/ldap_support.py runs a slapd of its own on free loopback
# ports (the system instance the package sets up is left alone); samba-ad-dc +
# samba-ad-provision: a throwaway Samba AD DC on 127.0.0.2 (tests/test_ldap_samba.py).
# postfix: tests/test_delivery_postfix.py runs throwaway instances of its own
# (the packaged service is neither configured nor started: see below).
# libmariadb-dev and pkg-config build mysqlclient (the SQL tests' MariaDB driver).
# python3-venv: the .venv below.
# prometheus: its promtool checks the metrics page and the example alert
# rules (tests/test_watching.py, tests/test_monitoring_examples.py); the
# packaged server is not started.
DEBIAN_PACKAGES=(python3-venv curl openssl fetchmail mpop getmail6 redis-server postfix
                 libmariadb-dev pkg-config slapd ldap-utils samba-ad-dc samba-ad-provision
                 prometheus
                 # tests/test_clients_more.py: s-nail, Net::POP3 with TLS, Jakarta Mail.
                 s-nail libio-socket-ssl-perl libjakarta-mail-java default-jre-headless
                 default-jdk-headless
                 dovecot-core dovecot-pop3d)  # the server popframe takes over (tests/dovecot_support.py)
DEBIAN_PACKAGES+=(haproxy)  # examples/cluster, tests/test_proxy.py, tests/test_cluster.py
DEBIAN_PACKAGES+=(gcc zlib1g-dev)  # tests/test_bench_c_loadgen.py compiles benchmarks/ceiling/pop3_load.c
DEBIAN_PACKAGES+=(libssl-dev)  # setup.py builds popframe/auth/_shacrypt.c (tests/test_shacrypt.py)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    # Postfix asks how to configure the system's own instance: not at all.
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Redis tests need a Redis on 127.0.0.1:6379: start one if none answers.
if command -v redis-server >/dev/null && ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1); then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/popframe-tests-redis.log" || true
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
python=.venv/bin/python
"$python" -m pip install -q --disable-pip-version-check -e '.[test]'

# sslyze (tests/test_tls_scan.py) pins an older cryptography than popframe
# needs, so it is not in the test extra: it gets a virtualenv of its own.
if [ ! -x .venv-sslyze/bin/sslyze ]; then
    python3 -m venv .venv-sslyze
    .venv-sslyze/bin/pip install -q --disable-pip-version-check 'sslyze>=6.3,<7'
fi
# Static checks first: they take seconds, the suite minutes.  Settings in
# pyproject.toml; the sans-IO core and the interfaces are held to --strict.
"$python" -m ruff check popframe tests benchmarks examples twisted
"$python" -m mypy
"$python" -m mypy --strict --follow-imports=silent --no-warn-unused-configs popframe/protocol popframe/interfaces

exec "$python" -m pytest "$@"
