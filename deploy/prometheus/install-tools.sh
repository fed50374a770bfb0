#!/bin/sh
# Installs promtool and prometheus (Debian package `prometheus`) for the rule tests of
# `make test`, where they are missing. Debian or Ubuntu; as root, or through sudo.
#
# The package's postinst starts (and enables) the prometheus service, which would leave a
# server listening on :9090 of the machine that only wanted the binaries. Where the host has
# no /usr/sbin/policy-rc.d of its own, one that refuses every service start (exit 101, honoured
# by invoke-rc.d and deb-systemd-invoke alike) is in place for the install only, and the service
# is then disabled; a host's own policy is left as it is.
set -eu

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: no apt-get here; install Prometheus 2.x (prometheus, promtool) yourself" >&2
    exit 1
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-tools: not root and no sudo; install the Debian package prometheus" >&2
        exit 1
    fi
    SUDO=sudo
fi

POLICY=/usr/sbin/policy-rc.d
OURS=
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# no service starts while fraudstream installs its test tools\nexit 101\n' |
        $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OURS=1
    trap '$SUDO rm -f "$POLICY"' EXIT
    trap 'exit 130' INT TERM
fi

$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends prometheus

if [ -n "$OURS" ]; then
    # started at the next boot otherwise
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable prometheus.service >/dev/null 2>&1 || true
    fi
fi
promtool --version | head -n 1
