#!/usr/bin/env bash
# Make sure the system programs a command needs are there: install them with apt-get when we are
# root on a Debian-like system, otherwise stop with a message naming the package.
# Usage: .ci/system-deps.sh demo|test
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${1:-test}" = test ]; then
  have mosquitto || need+=(mosquitto)
  have dbus-daemon || need+=(dbus)
  have supervise || need+=(daemontools)      # the GX bundle runs under daemontools in a test
  have shellcheck || need+=(shellcheck)      # the bundle's install scripts are linted
  have busybox || need+=(busybox)            # ... and run with the GX's busybox tools
  have systemd-analyze || need+=(systemd)    # docker/venus-prio.service is verified
  # The Docker image is built and run with rootful podman on runc, from a debootstrapped base
  # (tests/integration/test_docker.py). Without root that test cannot run and skips loudly, so
  # these are optional then; as root, and always in CI, they are required.
  docker=()
  have podman || docker+=(podman)
  have runc || docker+=(runc)
  have debootstrap || docker+=(debootstrap)
  if [ ${#docker[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] || [ -n "${CI:-}" ]; then
      need+=("${docker[@]}")
    else
      echo "notice: the Docker image test will be skipped (needs root and: ${docker[*]})" >&2
    fi
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian mosquitto package starts a system broker on 1883; the tests start their own.
  exit 0
fi
echo "venus-prio: missing system packages: ${need[*]}" >&2
echo "  install them with: sudo apt-get install ${need[*]}" >&2
exit 1
