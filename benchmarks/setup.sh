#!/usr/bin/env bash
# Install what the benchmark needs, checking first; safe to run again.
#   - Debian: dovecot-core, dovecot-pop3d (the server we compare against),
#     dovecot-lmtpd (its LMTP server, for benchmarks/delivery.py); gcc,
#     libssl-dev, libcrypt-dev, zlib1g-dev (ceiling/pop3_ceiling.c and the
#     C load generator ceiling/pop3_load.c, compiled by run.py)
#   - a "popbench" system user that owns Dovecot's copy of the maildirs
#   - PyPI: uvloop (the load generator's event loop), py-spy (profiling)
# Needs root for apt-get and useradd.  Starts no service: the benchmark runs
# its own Dovecot from a config file in a temp dir (Debian's policy-rc.d, if
# present, keeps the packaged service from starting; we also stop it if the
# package did start it).
set -euo pipefail

need_apt=()
for pkg in dovecot-core dovecot-pop3d dovecot-lmtpd gcc libssl-dev libcrypt-dev zlib1g-dev; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need_apt+=("$pkg")
    fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: need root to apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_apt[@]}"
    # The packaged system-wide dovecot is not what we benchmark.
    if command -v systemctl >/dev/null && systemctl is-active --quiet dovecot 2>/dev/null; then
        systemctl stop dovecot || true
        systemctl disable dovecot || true
    fi
fi

if ! getent passwd popbench >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: need root to create the popbench user" >&2
        exit 1
    fi
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin popbench
fi

PYTHON="${PYTHON:-python3}"
for mod_pkg in uvloop:uvloop py_spy:py-spy; do
    mod="${mod_pkg%%:*}"; pkg="${mod_pkg##*:}"
    if [ "$mod" = py_spy ]; then
        command -v py-spy >/dev/null && continue
    elif "$PYTHON" -c "import $mod" 2>/dev/null; then
        continue
    fi
    "$PYTHON" -m pip install -q --disable-pip-version-check "$pkg"
done

echo "setup.sh: dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1), popbench uid $(id -u popbench), uvloop $("$PYTHON" -c 'import uvloop; print(uvloop.__version__)'), $(py-spy --version)"
