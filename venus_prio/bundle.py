"""Build the offline Venus OS add-on bundle: one tarball a GX can install without network or pip.

How it works: the GX has Python (3.8 up to Venus v3.5x, 3.12 from v3.60) but no pip and none of our
dependencies, and everything outside ``/data`` is lost at a firmware update. So the bundle carries
the ``venus_prio`` package, a ``vendor/`` directory of pure-Python copies of the dependencies, the
``bin/venus-prio`` command (a sh wrapper that runs the package on the GX's python3 with only
``vendor/`` on the path), the daemontools service (``service/run``, ``service/log/run``),
``install.sh`` / ``uninstall.sh`` and a default ``config.yaml``. The dependencies come from ``pip
download`` of ``py3-none-any`` wheels for Python 3.8 (the oldest Python a GX runs; the same wheels
serve 3.12), unzipped. PyYAML ships no pure wheel: its sdist is downloaded and only ``lib/yaml/``
is copied, which is PyYAML's own pure-Python implementation (it uses libyaml only when its C
extension is importable, and that extension is never built here). The tarball is deterministic:
sorted entries, root ownership, fixed modes, and the mtime of ``SOURCE_DATE_EPOCH`` when set, so
the same sources and dependency versions give the same bytes.

Run it as ``make gx-bundle`` or ``python -m venus_prio.bundle [OUT_DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence, Tuple, Union

from venus_prio import __version__
from venus_prio.config import load_config
from venus_prio.errors import VenusPrioError

BUNDLE_DIR = "venus-prio"
PYTHON_TARGET = "3.8"  # the oldest Python on a GX; pure wheels chosen for it also run on 3.12
# Kept in step with [project] dependencies in pyproject.toml (a unit test compares them).
WHEEL_REQUIREMENTS: Tuple[str, ...] = (
    "aiomqtt>=2.5,<3",
    "paho-mqtt>=2.0,<3",  # aiomqtt's own dependency
    "typing_extensions>=4.4",  # aiomqtt imports it on Python < 3.11 (the GX: 3.8)
    "dbus-next>=0.2.3",
)
PYYAML_REQUIREMENT = "pyyaml>=5.3"
# softlimit -d for the service. Its data segment is 25-35 MB (measured on x86-64 with Python 3.8
# and 3.12, MQTT transport); 100 MB leaves room for bursts but turns a leak into a clean restart
# by supervise instead of the kernel's OOM killer picking one of Victron's own processes on a
# 512 MB Venus GX (Victron caps its services the same way).
MEMORY_LIMIT_BYTES = 100_000_000
RC_LOCAL_MARK = "# venus-prio add-on"

PathLike = Union[str, "os.PathLike[str]"]


class BundleError(VenusPrioError):
    """The bundle could not be built (download failed, a dependency is not pure Python...)."""


COMMAND = """#!/bin/sh
# The venus-prio command on a GX:  venus-prio check-config /data/venus-prio/config.yaml
# It runs the bundled package on the GX's own python3 with only the vendored dependencies on the
# path: the GX has none of them installed, and a PYTHONPATH of the caller's must not mix other
# copies in. It finds the bundle from its own location (through a symlink too), so it works
# from /data/venus-prio, an unpacked bundle, or a test root alike.
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
# daemontools run script: supervise starts it in this directory (through the /service link)
# and starts it again about a second after it exits.
set -eu
exec 2>&1
here=$(pwd -P)
root=${{here%/service}}
# The data segment is capped like Victron caps its own services: a leak ends in a clean restart
# by supervise, not in the kernel's OOM killer picking a Victron process on a 512 MB GX.
# The command puts only the vendored dependencies on the path and execs python3, so supervise
# signals the service itself.
exec softlimit -d {MEMORY_LIMIT_BYTES} "$root/bin/venus-prio" run --config "$root/config.yaml"
"""

SERVICE_LOG_RUN = """#!/bin/sh
# daemontools log script: timestamped, rotated logs of the service (4 files of 25 kB).
set -eu
here=$(pwd -P)
# <prefix>/data/venus-prio/service/log -> <prefix>: empty on a GX, a temp dir in tests.
prefix=${here%/data/venus-prio/service/log}
mkdir -p "$prefix/var/log/venus-prio"
exec multilog t s25000 n4 "$prefix/var/log/venus-prio"
"""

# Where install.sh and uninstall.sh find everything, each under VENUS_PRIO_ROOT (tests).
_SCRIPT_PATHS = f"""ROOT=${{VENUS_PRIO_ROOT:-}}
DEST=$ROOT/data/venus-prio
LINK=$ROOT/service/venus-prio
RC=$ROOT/data/rc.local
MARK='{RC_LOCAL_MARK}'
"""

INSTALL_SH = f"""#!/bin/sh
# Install or upgrade venus-prio on a Venus OS GX. Unpack the bundle anywhere but /data, then:
#     sh /tmp/venus-prio/install.sh
# Everything goes to /data/venus-prio (which survives firmware updates); an existing
# config.yaml there is kept. One line in /data/rc.local links the service into /service (a RAM
# disk rebuilt at every boot) again at each boot. VENUS_PRIO_ROOT (default empty: this GX)
# prefixes every path, for tests.
#
# The venus-prio command is /data/venus-prio/bin/venus-prio. To make it a plain command, one
# line in root's ~/.profile adds that directory to the PATH. Why there: every directory on
# root's PATH (/usr/local/bin, /usr/bin, /bin, the sbins) is on the read-only root filesystem
# (/usr/local/bin does not even exist), and remounting it read-write to add a link is lost at
# the next firmware update and shows as "modified" in the GUI's modification checks. Root's home
# /home/root is a link to /data/home/root: persistent, writable, outside those checks, and read
# by every login shell (SSH, the console). So no boot hook is needed for it; commands run
# without a login shell (ssh gx 'cmd', rc.local, /data/initscript) use the full path.
set -eu

{_SCRIPT_PATHS}HOME_DIR=$ROOT/data/home/root
LINE="if [ -d '$DEST/service' ]; then ln -sfn '$DEST/service' '$LINK'; fi  $MARK"
PATH_LINE="PATH=\\"\\$PATH:$DEST/bin\\"  $MARK"
SRC=$(cd "$(dirname "$0")" && pwd -P)

say() {{ printf 'venus-prio install: %s\\n' "$*"; }}
die() {{ printf 'venus-prio install: %s\\n' "$*" >&2; exit 1; }}

[ -d "$ROOT/data" ] || die "$ROOT/data not found: not a Venus OS GX"
[ -d "$ROOT/service" ] || die "$ROOT/service not found: not a Venus OS GX"
if [ ! -d "$SRC/venus_prio" ] || [ ! -d "$SRC/vendor" ] || [ ! -d "$SRC/bin" ]; then
    die "run install.sh from the unpacked bundle"
fi
command -v python3 >/dev/null 2>&1 || die "python3 not found"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "Python 3.8 or newer needed"
python3 -c 'import asyncio, dataclasses, ssl' 2>/dev/null ||
    die "Python modules missing: opkg install python3-modules"

# Swap a directory in whole: an upgrade must not leave modules of the old version behind.
replace_dir() {{
    rm -rf "$DEST/$1.new" "$DEST/$1.old"
    cp -R "$SRC/$1" "$DEST/$1.new"
    if [ -e "$DEST/$1" ]; then mv "$DEST/$1" "$DEST/$1.old"; fi
    mv "$DEST/$1.new" "$DEST/$1"
    rm -rf "$DEST/$1.old"
}}

# Replace a file by rename, never in place: supervise may be running the old one.
replace_file() {{
    cp "$SRC/$1" "$DEST/$1.new"
    chmod "$2" "$DEST/$1.new"
    mv -f "$DEST/$1.new" "$DEST/$1"
}}

if [ "$SRC" != "$DEST" ]; then
    # The service directory itself stays: a running supervise keeps its state in it.
    mkdir -p "$DEST/service/log"
    replace_dir venus_prio
    replace_dir vendor
    replace_dir bin
    replace_file service/run 755
    replace_file service/log/run 755
    replace_file install.sh 755
    replace_file uninstall.sh 755
    if [ -e "$DEST/config.yaml" ]; then
        say "keeping your $DEST/config.yaml"
    else
        replace_file config.yaml 644
        say "installed the default $DEST/config.yaml"
    fi
fi
VERSION=$("$DEST/bin/venus-prio" --version)

# Refuse to start on a bad configuration rather than restart-looping every second.
if ! "$DEST/bin/venus-prio" check-config "$DEST/config.yaml" >/dev/null; then
    die "fix $DEST/config.yaml (see the error above), then run sh $DEST/install.sh"
fi

# rc.local: drop any older venus-prio line, add the current one before a final "exit".
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
    }}' "$RC" >"$RC.venus-prio.tmp"
# cat, not mv: keep the owner and mode of the user's file.
cat "$RC.venus-prio.tmp" >"$RC"
rm -f "$RC.venus-prio.tmp"

# The command on root's PATH (see the top): drop any older line, add the current one.
if [ -d "$HOME_DIR" ]; then
    PROFILE=$HOME_DIR/.profile
    if [ -e "$PROFILE" ]; then
        grep -vF "$MARK" "$PROFILE" >"$PROFILE.venus-prio.tmp" || true
    else
        : >"$PROFILE.venus-prio.tmp"
    fi
    printf '%s\\n' "$PATH_LINE" >>"$PROFILE.venus-prio.tmp"
    # cat, not mv: keep the owner and mode of the user's file.
    cat "$PROFILE.venus-prio.tmp" >"$PROFILE"
    rm -f "$PROFILE.venus-prio.tmp"
    say "the venus-prio command: in a new login shell, or $DEST/bin/venus-prio"
else
    say "no $HOME_DIR: run the command as $DEST/bin/venus-prio"
fi

ln -sfn "$DEST/service" "$LINK"
if command -v svc >/dev/null 2>&1 && svok "$DEST/service" 2>/dev/null; then
    # Already supervised (an upgrade): restart on the new code; -u in case it was stopped.
    svc -t "$DEST/service"
    svc -u "$DEST/service"
    say "$VERSION installed and restarted"
else
    say "$VERSION installed; svscan starts it within 5 seconds"
fi
say "logs: tail -F $ROOT/var/log/venus-prio/current | tai64nlocal"
"""

UNINSTALL_SH = f"""#!/bin/sh
# Remove venus-prio from a Venus OS GX after handing your own MaxDischargePower back.
#     sh /data/venus-prio/uninstall.sh [--purge] [--force]
#   --purge  delete config.yaml too (by default it stays for a later reinstall)
#   --force  remove everything even when the baseline could not be written back
# VENUS_PRIO_ROOT (default empty: this GX) prefixes every path, for tests.
set -eu

{_SCRIPT_PATHS}LOGDIR=$ROOT/var/log/venus-prio
PROFILE=$ROOT/data/home/root/.profile

say() {{ printf 'venus-prio uninstall: %s\\n' "$*"; }}
die() {{ printf 'venus-prio uninstall: %s\\n' "$*" >&2; exit 1; }}

purge=no
force=no
for arg in "$@"; do
    case $arg in
        --purge) purge=yes ;;
        --force) force=yes ;;
        *) die "unknown option $arg (use --purge, --force)" ;;
    esac
done

# Stop a supervised directory (-d) and its supervise (-x); wait until supervise has exited.
stop_supervised() {{
    if command -v svc >/dev/null 2>&1 && svok "$1" 2>/dev/null; then
        svc -dx "$1"
        waited=0
        while svok "$1" 2>/dev/null; do
            [ "$waited" -lt 40 ] || die "$1 did not stop within 40 s"
            sleep 1
            waited=$((waited + 1))
        done
    fi
}}

# 1. Stop. The link goes first, or svscan would start a new supervise within 5 s. On SIGTERM
# the service hands the baseline back itself; the logger stops last so that is logged.
rm -f "$LINK"
stop_supervised "$DEST/service"
stop_supervised "$DEST/service/log"

# 2. Hand the user's own MaxDischargePower back (again: it may never have run cleanly).
if [ -x "$DEST/bin/venus-prio" ] && [ -e "$DEST/config.yaml" ]; then
    if "$DEST/bin/venus-prio" restore --config "$DEST/config.yaml"; then
        say "restore done: your own MaxDischargePower is in force"
        restored=yes
    elif [ "$force" = yes ]; then
        say "WARNING: could not write your MaxDischargePower back: set it in the GUI"
        say "(Settings > ESS); the journal with your value stays in $DEST"
        restored=no
    else
        die "could not write your MaxDischargePower back; the service is stopped but will start
again at boot. Run this again when the GX is reachable, or with --force and set the value in
the GUI (Settings > ESS)"
    fi
else
    restored=yes
fi

# 3. The boot hook and the PATH line. A file left with nothing but a shebang or blank lines
# was created by the installer: remove it.
drop_marked() {{
    [ -e "$1" ] || return 0
    grep -vF "$MARK" "$1" >"$1.venus-prio.tmp" || true
    cat "$1.venus-prio.tmp" >"$1"
    rm -f "$1.venus-prio.tmp"
    if ! grep -qv -e '^#!' -e '^[[:space:]]*$' "$1"; then
        rm -f "$1"
    fi
}}
drop_marked "$RC"
drop_marked "$PROFILE"

# 4. Files.
rm -rf "$LOGDIR"
if [ "$purge" = yes ] && [ "$restored" = yes ]; then
    rm -rf "$DEST"
    say "removed $DEST"
elif [ -d "$DEST" ]; then
    for item in "$DEST"/* "$DEST"/.[!.]*; do
        case ${{item##*/}} in
            config.yaml | '*' | '.[!.]*') ;;
            journal.json) if [ "$restored" = yes ]; then rm -f "$item"; fi ;;
            *) rm -rf "$item" ;;
        esac
    done
    say "removed; your config stays in $DEST"
fi
"""


def _minimal_config() -> str:
    """Return the default config.yaml used when the repository has none."""
    return (
        "# venus-prio on this GX. Check it with:\n"
        "#   /data/venus-prio/bin/venus-prio check-config /data/venus-prio/config.yaml\n"
        "control:\n"
        "  # The power you normally allow the inverter to deliver (W, all phases): EDIT THIS.\n"
        "  max_inverter_power_w: 3000\n"
        "venus:\n"
        "  transport: auto\n"
        "  host: 127.0.0.1\n"
        "  port: 1883\n"
        "log_level: INFO\n"
    )


def bundle_config(repo_root: Path) -> str:
    """Return the config.yaml to ship: the repository's example, checked for use on the GX."""
    example = repo_root / "config.yaml"
    text = example.read_text(encoding="utf-8") if example.is_file() else _minimal_config()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        config = load_config(path, env={})
    venus = config.venus
    if venus.transport != "auto" or venus.broker.host != "127.0.0.1" or venus.vrm:
        raise BundleError(
            f"{example}: the GX bundle needs venus.transport auto and venus.host 127.0.0.1, "
            f"got {venus.transport} and {venus.broker.host}"
        )
    return text


def _pip(args: Sequence[str], *, pip: Sequence[str]) -> None:
    result = subprocess.run(
        [*pip, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if result.returncode != 0:
        output = result.stdout.decode("utf-8", "replace")
        raise BundleError(f"{' '.join(args[:1])} failed:\n{output}")


def download_vendor(vendor: Path, *, work: Path, pip: Sequence[str]) -> List[str]:
    """Fill ``vendor`` with pure-Python copies of the dependencies; return the files fetched."""
    wheels = work / "wheels"
    sdists = work / "sdists"
    _pip(
        [
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            PYTHON_TARGET,
            "--implementation",
            "py",  # with abi none and platform any: only py3-none-any wheels qualify
            "--abi",
            "none",
            "--platform",
            "any",
            "--dest",
            str(wheels),
            *WHEEL_REQUIREMENTS,
        ],
        pip=pip,
    )
    _pip(
        [
            "download",
            "--no-deps",
            "--no-binary=pyyaml",  # only PyYAML: its build backend may still come as wheels
            "--python-version",
            PYTHON_TARGET,
            "--dest",
            str(sdists),
            PYYAML_REQUIREMENT,
        ],
        pip=pip,
    )
    vendor.mkdir(parents=True, exist_ok=True)
    fetched = sorted(p.name for p in wheels.iterdir()) + sorted(p.name for p in sdists.iterdir())
    for wheel in sorted(wheels.glob("*.whl")):
        _unpack_pure_wheel(wheel, vendor)
    sdist = sorted(sdists.glob("*.tar.gz"))
    if len(sdist) != 1:
        raise BundleError(f"expected one PyYAML sdist, got {[p.name for p in sdists.iterdir()]}")
    _copy_pure_yaml(sdist[0], vendor)
    return fetched


def _unpack_pure_wheel(wheel: Path, vendor: Path) -> None:
    if not wheel.name.endswith("-none-any.whl"):
        raise BundleError(f"{wheel.name}: not a pure-Python wheel")
    with zipfile.ZipFile(wheel) as archive:
        native = [n for n in archive.namelist() if n.endswith((".so", ".pyd", ".dylib"))]
        if native:
            raise BundleError(f"{wheel.name}: contains compiled code {native[0]}")
        archive.extractall(vendor)


def _copy_pure_yaml(sdist: Path, vendor: Path) -> None:
    """Copy ``lib/yaml/*.py`` and the licence out of PyYAML's sdist (no build, no extraction)."""
    target = vendor / "yaml"
    target.mkdir()
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) < 2:
                continue
            inner = parts[1:]
            if len(inner) == 3 and inner[:2] == ("lib", "yaml") and inner[2].endswith(".py"):
                destination = target / inner[2]
            elif inner == ("LICENSE",):
                destination = vendor / f"{parts[0]}.LICENSE"
            else:
                continue
            source = archive.extractfile(member)
            if source is None:
                continue
            destination.write_bytes(source.read())
    if not (target / "__init__.py").is_file() or not (target / "loader.py").is_file():
        raise BundleError(f"{sdist.name}: no lib/yaml/ package found")


def _copy_package(dest: Path) -> None:
    source = Path(__file__).resolve().parent
    shutil.copytree(
        source,
        dest / "venus_prio",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
    )


def _write(path: Path, text: str, *, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)


def _tar_filter(info: tarfile.TarInfo, *, mtime: int) -> tarfile.TarInfo:
    """Normalise an entry so the tarball depends on content only."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = mtime
    if info.isdir() or info.mode & 0o100:
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


def write_tarball(tree: Path, out: Path) -> None:
    """Write ``tree`` (and its name as the top directory) to ``out`` as a normalised .tar.gz."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    mtime = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in [tree, *sorted(tree.rglob("*"))]:
            info = archive.gettarinfo(str(path), arcname=path.relative_to(tree.parent).as_posix())
            info = _tar_filter(info, mtime=mtime)
            if info.isfile():
                with path.open("rb") as data:
                    archive.addfile(info, data)
            else:
                archive.addfile(info)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=mtime, compresslevel=9
    ) as compressed:
        compressed.write(buffer.getvalue())
    tmp.replace(out)


def build_bundle(
    out_dir: PathLike,
    *,
    repo_root: Optional[Path] = None,
    pip: Optional[Sequence[str]] = None,
) -> Path:
    """Build ``venus-prio-<version>.tar.gz`` in ``out_dir`` and return its path."""
    root = repo_root if repo_root is not None else Path(__file__).resolve().parent.parent
    pip_command = list(pip) if pip is not None else [sys.executable, "-m", "pip"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_text = bundle_config(root)
    with tempfile.TemporaryDirectory(prefix="venus-prio-bundle-") as tmp:
        tree = Path(tmp) / BUNDLE_DIR
        tree.mkdir()
        _copy_package(tree)
        download_vendor(tree / "vendor", work=Path(tmp) / "download", pip=pip_command)
        _write(tree / "config.yaml", config_text)
        _write(tree / "install.sh", INSTALL_SH, executable=True)
        _write(tree / "uninstall.sh", UNINSTALL_SH, executable=True)
        _write(tree / "bin" / "venus-prio", COMMAND, executable=True)
        _write(tree / "service" / "run", SERVICE_RUN, executable=True)
        _write(tree / "service" / "log" / "run", SERVICE_LOG_RUN, executable=True)
        tarball = out / f"venus-prio-{__version__}.tar.gz"
        write_tarball(tree, tarball)
    return tarball


def main(argv: Optional[List[str]] = None) -> int:
    """Build the bundle from the command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m venus_prio.bundle", description="Build the Venus OS GX add-on bundle."
    )
    parser.add_argument("out_dir", nargs="?", default="dist", help="where to write the tarball")
    args = parser.parse_args(argv)
    try:
        tarball = build_bundle(args.out_dir)
    except VenusPrioError as exc:
        sys.stderr.write(f"venus-prio bundle: {exc}\n")
        return 1
    sys.stdout.write(f"{tarball}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
