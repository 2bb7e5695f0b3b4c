"""The scripts of the GX bundle, which is also a SetupHelper / PackageManager package.

How it works: kwindrem's PackageManager (SetupHelper) installs, updates and uninstalls add-ons
from the GX's own menus, from GitHub or a USB stick, and reinstalls them after every firmware
update (``../shared/docs/setuphelper.md`` holds its contract). It finds a package in
``/data/<name>`` by its ``version`` file and runs its ``setup`` as ``setup install|uninstall|check
runFromPm``, reading the exit code, and ``/etc/venus/installedVersion-<name>`` as the mark of an
installed version. It replaces ``/data/<name>`` as a whole on every update, so the owner's
``config.yaml`` and the journal live in ``/data/setupOptions/<name>/`` (kept by updates,
uninstalls and firmware updates alike).

``setup`` is self-contained: it does not source SetupHelper's helpers, so the same script serves
the SSH route (``install.sh`` copies the bundle to ``/data/VenusPrio`` and calls it) on a GX
without SetupHelper, and the bundle tests can drive it in a GX-like root. It does what
SetupHelper's ``installService`` does for a service: a copy of ``services/VenusPrio`` in
``/opt/victronenergy/service`` (the root filesystem, copied to the RAM disk ``/service`` at
boot) and one in ``/service`` so that svscan starts it now.

The package name is ``VenusPrio``: PackageManager takes a USB archive's name up to its first
``-`` as the package name and rejects names with ``-<digit>`` and a few others, so the project's
name ``venus-prio`` cannot be one; letters only also makes it a valid GitHub repository name.

Every script takes its paths under ``VENUS_PRIO_ROOT`` (empty on a GX), for the tests.
"""

from __future__ import annotations

import re

from venus_prio.errors import VenusPrioError

PACKAGE_NAME = "VenusPrio"
# The previous layout (before the package): everything in /data/venus-prio.
OLD_DIR = "venus-prio"
RC_LOCAL_MARK = "# venus-prio add-on"
# softlimit -d for the service. Its data segment is 25-35 MB (measured on x86-64 with Python 3.8
# and 3.12, MQTT transport); 100 MB leaves room for bursts but turns a leak into a clean restart
# by supervise instead of the kernel's OOM killer picking one of Victron's own processes on a
# 512 MB Venus GX (Victron caps its services the same way).
MEMORY_LIMIT_BYTES = 100_000_000

_PEP440 = re.compile(r"^(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.dev(\d+))?$")


def package_version(version: str) -> str:
    """Return ``version`` (PEP 440) in PackageManager's form: ``v1.2.3``, ``v1.2.3b4``...

    PackageManager knows alpha (``a``), beta (``b``) and development (``d``) pre-releases; a
    release candidate is its beta.
    """
    match = _PEP440.match(version)
    if match is None:
        raise VenusPrioError(f"version {version!r} has no PackageManager form")
    release, kind, number, dev = match.groups()
    if kind is not None:
        return f"v{release}{'b' if kind == 'rc' else kind}{number}"
    if dev is not None:
        return f"v{release}d{dev}"
    return f"v{release}"


def archive_name(version: str) -> str:
    """Return the archive's file name as PackageManager takes it from a USB stick.

    It must start with the package name and a ``-``, and hold ``-<digit>`` (or ``-latest``...).
    """
    return f"{PACKAGE_NAME}-{version}.tar.gz"


COMMAND = """#!/bin/sh
# The venus-prio command on a GX:
#     venus-prio check-config /data/setupOptions/VenusPrio/config.yaml --probe
# It runs the bundled package on the GX's own python3 with only the vendored dependencies on the
# path: the GX has none of them installed, and a PYTHONPATH of the caller's must not mix other
# copies in. It finds the bundle from its own location (through a symlink too).
set -eu
self=$0
if [ -L "$self" ]; then
    self=$(readlink -f "$self")
fi
bin=$(cd "$(dirname "$self")" && pwd -P)
root=${bin%/bin}
PYTHONPATH="$root/vendor:$root"
export PYTHONPATH
exec python3 -m venus_prio "$@"
"""

SERVICE_RUN = f"""#!/bin/sh
# daemontools run script. supervise starts it in /service/{PACKAGE_NAME} (a copy of this
# directory) and starts it again about a second after it exits. VENUS_PRIO_ROOT: tests only.
exec 2>&1
root=${{VENUS_PRIO_ROOT:-}}
# The data segment is capped like Victron caps its own services: a leak ends in a clean restart
# by supervise, not in the kernel's OOM killer picking a Victron process on a 512 MB GX.
# The command puts only the vendored dependencies on the path and execs python3, so supervise
# signals the service itself.
exec softlimit -d {MEMORY_LIMIT_BYTES} "$root/data/{PACKAGE_NAME}/bin/venus-prio" run \\
    --config "$root/data/setupOptions/{PACKAGE_NAME}/config.yaml"
"""

SERVICE_LOG_RUN = f"""#!/bin/sh
# daemontools log script, as Victron's services have: timestamped, 4 files of 25 kB.
root=${{VENUS_PRIO_ROOT:-}}
mkdir -p "$root/var/log/{PACKAGE_NAME}"
exec multilog t s25000 n4 "$root/var/log/{PACKAGE_NAME}"
"""

SETUP = f"""#!/bin/sh
# {PACKAGE_NAME} setup, as kwindrem's PackageManager (SetupHelper) calls it:
#     setup install|uninstall|check|reinstall [runFromPm|auto|deferReboot|deferGuiRestart]
#     setup uninstall [--purge] [--force]      (from a shell; no argument: a prompt)
# Exit codes are PackageManager's: 0 done, 255 error (the reason on stderr), 254 this firmware's
# Python is too old. Installed means: the service copied to /opt/victronenergy/service (the
# root filesystem) and /service (the RAM disk svscan watches), and the version in
# /etc/venus/installedVersion-{PACKAGE_NAME}; a firmware update wipes all three, and
# PackageManager (or the rc.local line of install.sh) runs "setup install" again.
# The owner's config.yaml and the journal stay in /data/setupOptions/{PACKAGE_NAME}: an update,
# an uninstall and a firmware update leave them alone. VENUS_PRIO_ROOT prefixes every path
# (default empty: this GX), for tests.
set -u

PACKAGE={PACKAGE_NAME}
ROOT=${{VENUS_PRIO_ROOT:-}}
PKG=$ROOT/data/$PACKAGE
OPTIONS=$ROOT/data/setupOptions/$PACKAGE
CONFIG=$OPTIONS/config.yaml
SERVICES=$ROOT/service
SERVICE=$SERVICES/$PACKAGE
ROOTFS_SERVICE=$ROOT/opt/victronenergy/service/$PACKAGE
INSTALLED=$ROOT/etc/venus/installedVersion-$PACKAGE
INSTALLED_SERVICES=$ROOT/etc/venus/installedModifications/installedServices-$PACKAGE
LOGDIR=$ROOT/var/log/$PACKAGE
OLD=$ROOT/data/{OLD_DIR}
RC=$ROOT/data/rc.local
PROFILE=$ROOT/data/home/root/.profile
MARK='{RC_LOCAL_MARK}'
COMMAND=$PKG/bin/venus-prio

EXIT_ERROR=255
EXIT_INCOMPATIBLE_VERSION=254

say() {{ printf '%s: %s\\n' "$PACKAGE" "$*"; }}
# PackageManager shows stderr as the reason of a failure.
fail() {{
    code=$1
    shift
    printf '%s: %s\\n' "$PACKAGE" "$*" >&2
    exit "$code"
}}

action=
purge=no
force=no
for arg in "$@"; do
    case $arg in
        install | uninstall | check | reinstall) action=$arg ;;
        runFromPm | auto | deferReboot | deferGuiRestart) ;;
        --purge) purge=yes ;;
        --force) force=yes ;;
        *) fail "$EXIT_ERROR" "unknown argument $arg" ;;
    esac
done
if [ -z "$action" ]; then
    printf 'Install or uninstall %s (i/u, anything else quits)? ' "$PACKAGE"
    read -r answer || answer=
    case $answer in
        i | I) action=install ;;
        u | U) action=uninstall ;;
        *) exit 0 ;;
    esac
fi

here=$(cd "$(dirname "$0")" && pwd -P)
if [ ! -d "$PKG" ] || [ "$here" != "$(cd "$PKG" && pwd -P)" ]; then
    fail "$EXIT_ERROR" "setup runs from $PKG only (from elsewhere: sh install.sh)"
fi

precheck() {{
    command -v python3 >/dev/null 2>&1 || fail "$EXIT_INCOMPATIBLE_VERSION" "python3 not found"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' ||
        fail "$EXIT_INCOMPATIBLE_VERSION" "Python 3.8 or newer needed (Venus OS v2.90+)"
    python3 -c 'import asyncio, dataclasses, ssl' 2>/dev/null ||
        fail "$EXIT_ERROR" "Python modules missing: opkg install python3-modules"
}}

# The root filesystem of a GX is read-only; /opt/victronenergy/service and /etc/venus are on it.
root_rw() {{
    [ -z "$ROOT" ] || return 0
    if [ ! -w /opt/victronenergy ] && [ -f /opt/victronenergy/swupdate-scripts/remount-rw.sh ]; then
        sh /opt/victronenergy/swupdate-scripts/remount-rw.sh
    fi
}}

# Stop a supervised directory (-d) and its supervise (-x); wait until supervise has exited.
stop_supervised() {{
    if command -v svc >/dev/null 2>&1 && svok "$1" 2>/dev/null; then
        svc -dx "$1"
        waited=0
        while svok "$1" 2>/dev/null; do
            [ "$waited" -lt 40 ] || fail "$EXIT_ERROR" "$1 did not stop within 40 s"
            sleep 1
            waited=$((waited + 1))
        done
    fi
}}

# Take a service directory out of svscan's sight first (it skips names starting with a dot,
# and would start a new supervise within 5 s), then stop it and remove it.
remove_service_dir() {{
    [ -e "$1" ] || return 0
    parked=$(dirname "$1")/.$(basename "$1").removing
    rm -rf "$parked"
    mv "$1" "$parked"
    stop_supervised "$parked"
    stop_supervised "$parked/log"
    rm -rf "$parked"
}}

# Drop the lines carrying our mark; a file left with nothing but a shebang or blank lines was
# created by us: remove it. cat, not mv: keep the owner and mode of the user's file.
drop_marked() {{
    [ -e "$1" ] || return 0
    grep -vF "$MARK" "$1" >"$1.$PACKAGE.tmp" || true
    cat "$1.$PACKAGE.tmp" >"$1"
    rm -f "$1.$PACKAGE.tmp"
    if ! grep -qv -e '^#!' -e '^[[:space:]]*$' "$1"; then
        rm -f "$1"
    fi
}}

# Replace a file by rename, never in place: supervise may be running the old one.
replace_file() {{
    cp "$1" "$2.new"
    chmod 755 "$2.new"
    mv -f "$2.new" "$2"
}}

# An installation of the previous layout (/data/{OLD_DIR}, linked into /service): stop it (it
# hands the user's value back on SIGTERM), move its config and journal over, remove the rest.
migrate_previous_layout() {{
    [ -d "$OLD" ] || return 0
    say "moving the installation in $OLD over to $PKG and $OPTIONS"
    rm -f "$SERVICES/{OLD_DIR}"
    stop_supervised "$OLD/service"
    stop_supervised "$OLD/service/log"
    mkdir -p "$OPTIONS"
    for name in config.yaml journal.json; do
        [ -e "$OLD/$name" ] || continue
        if [ -e "$OPTIONS/$name" ]; then
            mv "$OLD/$name" "$OPTIONS/$name.previous"
            say "kept $OPTIONS/$name; the one from $OLD is $OPTIONS/$name.previous"
        else
            mv "$OLD/$name" "$OPTIONS/$name"
        fi
    done
    drop_marked "$RC"
    drop_marked "$PROFILE"
    rm -rf "$ROOT/var/log/{OLD_DIR}" "$OLD"
}}

install_service() {{
    source=$PKG/services/$PACKAGE
    root_rw
    mkdir -p "$(dirname "$ROOTFS_SERVICE")" "$(dirname "$INSTALLED_SERVICES")"
    rm -rf "$ROOTFS_SERVICE.new"
    cp -R "$source" "$ROOTFS_SERVICE.new"
    rm -rf "$ROOTFS_SERVICE"
    mv "$ROOTFS_SERVICE.new" "$ROOTFS_SERVICE"
    printf '%s\\n' "$PACKAGE" >"$INSTALLED_SERVICES"
    if [ -d "$SERVICE" ]; then
        # Supervised already (an update): new run scripts, then a restart on the new code.
        replace_file "$source/run" "$SERVICE/run"
        replace_file "$source/log/run" "$SERVICE/log/run"
        if command -v svc >/dev/null 2>&1 && svok "$SERVICE" 2>/dev/null; then
            svc -t "$SERVICE/log"
            svc -t "$SERVICE"
            svc -u "$SERVICE"
            say "service restarted on the new version"
        fi
    else
        # Whole, under a name svscan skips, then renamed: svscan never sees half a directory.
        rm -rf "$SERVICES/.$PACKAGE.new"
        cp -R "$source" "$SERVICES/.$PACKAGE.new"
        mv "$SERVICES/.$PACKAGE.new" "$SERVICE"
        say "service added; svscan starts it within 5 seconds"
    fi
}}

do_install() {{
    precheck
    migrate_previous_layout
    mkdir -p "$OPTIONS"
    rm -f "$OPTIONS/DO_NOT_AUTO_INSTALL"
    if [ ! -e "$CONFIG" ]; then
        cp "$PKG/config.example.yaml" "$CONFIG"
        say "installed the default $CONFIG: set control.max_inverter_power_w there"
    fi
    # Refuse to start on a bad configuration rather than restart-loop every second. What runs
    # now may be an older version: take it down (it hands the user's value back).
    if ! "$COMMAND" check-config "$CONFIG" >/dev/null; then
        remove_service_dir "$SERVICE"
        rm -f "$INSTALLED"
        fail "$EXIT_ERROR" "fix $CONFIG (the error above names the key), then install again"
    fi
    install_service
    if [ -d "$(dirname "$PROFILE")" ]; then
        # The command on root's PATH in login shells (/home/root is /data/home/root).
        drop_marked "$PROFILE"
        printf '%s\\n' "PATH=\\"\\$PATH:$PKG/bin\\"  $MARK" >>"$PROFILE"
    fi
    mkdir -p "$(dirname "$INSTALLED")"
    cp "$PKG/version" "$INSTALLED"
    say "$(cat "$PKG/version") installed; config $CONFIG"
    say "logs: tail -F $LOGDIR/current | tai64nlocal"
}}

do_uninstall() {{
    # 1. Stop. On SIGTERM the service hands the user's value back; the logger stops last.
    remove_service_dir "$SERVICE"
    # 2. Hand the user's own MaxDischargePower back (again: it may never have run cleanly).
    restored=yes
    if [ -x "$COMMAND" ] && [ -e "$CONFIG" ]; then
        if "$COMMAND" restore --config "$CONFIG"; then
            say "restore done: your own MaxDischargePower is in force"
        elif [ "$force" = yes ]; then
            say "WARNING: could not write your MaxDischargePower back: set it in the GUI"
            say "(Settings > ESS); the journal with your value stays in $OPTIONS"
            restored=no
        else
            fail "$EXIT_ERROR" "could not write your MaxDischargePower back, so $PACKAGE stays \\
installed (stopped now, started again at boot). Uninstall again when the GX is reachable, or \\
from a shell with: $PKG/setup uninstall --force, then set the value in the GUI (Settings > ESS)"
        fi
    fi
    # 3. Everything outside /data, the boot line and the PATH line.
    root_rw
    rm -rf "$ROOTFS_SERVICE" "$INSTALLED_SERVICES" "$INSTALLED" "$LOGDIR"
    drop_marked "$RC"
    drop_marked "$PROFILE"
    # 4. The owner's files stay for a reinstall unless purged (never an unrestored journal).
    if [ "$purge" = yes ] && [ "$restored" = yes ]; then
        rm -rf "$OPTIONS"
        say "uninstalled; removed $OPTIONS"
    else
        mkdir -p "$OPTIONS"
        # PackageManager's flag: no automatic install of an uninstalled package.
        : >"$OPTIONS/DO_NOT_AUTO_INSTALL"
        say "uninstalled; your config and journal stay in $OPTIONS"
    fi
}}

case $action in
    check) precheck ;;
    reinstall)
        if [ -e "$INSTALLED" ] && [ "$(cat "$INSTALLED")" = "$(cat "$PKG/version")" ]; then
            say "$(cat "$PKG/version") is installed already"
        else
            do_install
        fi
        ;;
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
exit 0
"""

INSTALL_SH = f"""#!/bin/sh
# Install or update {PACKAGE_NAME} over SSH, on a GX with or without SetupHelper. Unpack the
# bundle anywhere but /data, then:
#     sh /tmp/{PACKAGE_NAME}/install.sh
# It copies the package to /data/{PACKAGE_NAME} (as PackageManager would) and runs its setup,
# then adds one line to /data/rc.local that runs setup again after a firmware update (when
# SetupHelper is not there to do it). VENUS_PRIO_ROOT (default empty: this GX) prefixes every
# path, for tests.
set -eu

PACKAGE={PACKAGE_NAME}
ROOT=${{VENUS_PRIO_ROOT:-}}
PKG=$ROOT/data/$PACKAGE
RC=$ROOT/data/rc.local
MARK='{RC_LOCAL_MARK}'
SRC=$(cd "$(dirname "$0")" && pwd -P)

say() {{ printf '%s install: %s\\n' "$PACKAGE" "$*"; }}
die() {{ printf '%s install: %s\\n' "$PACKAGE" "$*" >&2; exit 1; }}

[ -d "$ROOT/data" ] || die "$ROOT/data not found: not a Venus OS GX"
[ -d "$ROOT/service" ] || die "$ROOT/service not found: not a Venus OS GX"
if [ ! -f "$SRC/version" ] || [ ! -x "$SRC/setup" ]; then
    die "run install.sh from the unpacked bundle"
fi

if [ ! -d "$PKG" ] || [ "$SRC" != "$(cd "$PKG" && pwd -P)" ]; then
    # Swapped in whole, as PackageManager does: no module of an older version stays behind.
    rm -rf "$PKG.new" "$PKG.old"
    cp -R "$SRC" "$PKG.new"
    if [ -e "$PKG" ]; then mv "$PKG" "$PKG.old"; fi
    mv "$PKG.new" "$PKG"
    rm -rf "$PKG.old"
fi
"$PKG/setup" install || die "setup failed (see above)"

# rc.local: after a firmware update (which wipes the root filesystem) install again, unless
# SetupHelper's PackageManager is there to do it. Drop any older line of ours, add the current
# one before a final "exit".
LINE="if [ ! -d '$ROOT/data/SetupHelper' ] && [ ! -e '$ROOT/etc/venus/installedVersion-$PACKAGE' ] \
&& [ -x '$PKG/setup' ]; then '$PKG/setup' install auto; fi  $MARK"
if [ ! -e "$RC" ]; then
    printf '#!/bin/sh\\n' >"$RC"
fi
if [ ! -x "$RC" ]; then
    chmod 755 "$RC"
    say "made $RC executable (Venus runs it at boot only then)"
fi
VP_LINE=$LINE VP_MARK=$MARK awk '
    index($0, ENVIRON["VP_MARK"]) == 0 {{ n++; line[n] = $0 }}
    END {{
        last = n
        while (last > 0 && line[last] ~ /^[ \\t]*$/) last--
        at = n + 1
        if (last > 0 && line[last] ~ /^[ \\t]*exit([ \\t]+[0-9]+)?[ \\t]*$/) at = last
        for (i = 1; i <= n; i++) {{
            if (i == at) print ENVIRON["VP_LINE"]
            print line[i]
        }}
        if (at == n + 1) print ENVIRON["VP_LINE"]
    }}' "$RC" >"$RC.$PACKAGE.tmp"
# cat, not mv: keep the owner and mode of the user's file.
cat "$RC.$PACKAGE.tmp" >"$RC"
rm -f "$RC.$PACKAGE.tmp"
say "the venus-prio command: in a new login shell, or $PKG/bin/venus-prio"
"""

UNINSTALL_SH = f"""#!/bin/sh
# Uninstall {PACKAGE_NAME} over SSH after handing your own MaxDischargePower back, and remove
# the package from /data:
#     sh /data/{PACKAGE_NAME}/uninstall.sh [--purge] [--force]
#   --purge  delete /data/setupOptions/{PACKAGE_NAME} (config.yaml, journal) too
#   --force  uninstall even when your value could not be written back (the journal stays)
# VENUS_PRIO_ROOT (default empty: this GX) prefixes every path, for tests.
set -eu
PKG=${{VENUS_PRIO_ROOT:-}}/data/{PACKAGE_NAME}
"$PKG/setup" uninstall "$@"
rm -rf "$PKG"
printf '%s uninstall: removed %s\\n' {PACKAGE_NAME} "$PKG"
"""
