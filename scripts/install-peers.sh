#!/usr/bin/env bash
# Installs the peers and load generators used by loadtest/run: nginx, haproxy, wrk (Debian packages)
# and oha (crates.io, into ~/.cargo/bin). Skips whatever is already present. loadtest/run does the
# same on demand; this is for preparing a machine ahead of time.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || pkgs+=(haproxy)
command -v wrk >/dev/null || pkgs+=(wrk)
command -v curl >/dev/null || pkgs+=(curl)
if [ "${1:-}" = --perf ] && ! command -v perf >/dev/null; then pkgs+=(linux-perf); fi
if [ ${#pkgs[@]} -gt 0 ]; then
  as_root timeout 600 apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
if ! command -v oha >/dev/null && [ ! -x "$HOME/.cargo/bin/oha" ]; then
  timeout 3600 cargo install oha --locked
fi
echo "peers: nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*\///'), $(/usr/sbin/haproxy -v | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $("$HOME/.cargo/bin/oha" --version 2>/dev/null || oha --version)"
