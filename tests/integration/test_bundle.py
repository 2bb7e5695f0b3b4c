"""The GX bundle as a PackageManager package: build, install, upgrade, uninstall in a fake root.

The bundle is built for real (``pip download`` from the package registry) once for the module,
unpacked with tar, and put in place the way kwindrem's PackageManager does it: the package
directory ``/data/VenusPrio`` replaced as a whole, then ``setup install|uninstall|check
runFromPm`` with PackageManager's exit codes and its ``/etc/venus/installedVersion-VenusPrio``
mark. The SSH route (``install.sh`` / ``uninstall.sh``) is driven too. Everything happens in a
temporary root given by ``VENUS_PRIO_ROOT``; the service runs under Debian's daemontools
(svscan, supervise, multilog, softlimit) with a Python that has none of the dependencies
installed, so only the vendored copies can satisfy the imports, against the fake GX on a real
Mosquitto broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import yaml

from tests import tools
from tests.integration.conftest import Broker, FakeGxFactory, eventually, run_async
from tests.ports import reserve_port
from venus_prio import __version__
from venus_prio.bundle import build_bundle, write_tarball
from venus_prio.config import load_config
from venus_prio.fakes.mqtt_gx import DEFAULT_PORTAL_ID, FakeGx
from venus_prio.gx_package import (
    MEMORY_LIMIT_BYTES,
    PACKAGE_NAME,
    RC_LOCAL_MARK,
    archive_name,
    package_version,
)
from venus_prio.journal import Journal, journal_path, load_journal, save_journal
from venus_prio.venus import paths

pytestmark = pytest.mark.integration

SERVICE = f"services/{PACKAGE_NAME}"
SCRIPTS = (
    "setup",
    "install.sh",
    "uninstall.sh",
    f"{SERVICE}/run",
    f"{SERVICE}/log/run",
    "bin/venus-prio",
)
DAEMONTOOLS = ("svscan", "supervise", "svc", "svok", "svstat", "multilog", "softlimit")
BASELINE = 2500.0
# PackageManager's exit codes (SetupHelper's EssentialResources).
EXIT_SUCCESS = 0
EXIT_ERROR = 255


def require_tool(name: str, package: str) -> str:
    """Return the path of ``name``; fail in CI, skip loudly elsewhere, when it is missing."""
    hint = f"this test needs the `{package}` package"
    return tools.require_tool(name, hint=hint, skipping="A BUNDLE TEST")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the bundle once for this module."""
    return build_bundle(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def bundle(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unpack the bundle with tar, as on the GX; return its ``VenusPrio/`` directory."""
    where = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(where)], check=True)
    return where / PACKAGE_NAME


@pytest.fixture(scope="module")
def upgrade(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the same package as a later version (what PackageManager would download)."""
    newer = tmp_path_factory.mktemp("newer") / PACKAGE_NAME
    shutil.copytree(bundle, newer, symlinks=True)
    (newer / "version").write_text("v99.0.0\n")
    (newer / "venus_prio" / "new_module.py").write_text("# only in the new version\n")
    return newer


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the bin dir of a venv with nothing installed (like the GX's python3)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin"


@pytest.fixture
def gx_root(tmp_path: Path) -> Path:
    """Return an empty fake GX root: /data, root's home, /service and /var/log, nothing else."""
    root = tmp_path / "gx"
    for directory in ("data/home/root", "service", "var/log"):
        (root / directory).mkdir(parents=True)
    return root


# -- helpers -------------------------------------------------------------------------------


def gx_env(root: Path, bare: Path) -> Dict[str, str]:
    """Return the environment of a GX shell: the bare python3 first on PATH, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bare}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["VENUS_PRIO_ROOT"] = str(root)
    return env


def sh(
    script: Path, *args: str, root: Path, bare: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run a bundle script with /bin/sh the way the docs say; return the finished process."""
    return subprocess.run(
        ["sh", str(script), *args],
        env=gx_env(root, bare),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout
    return result.stdout


def pm_place(package: Path, root: Path) -> None:
    """Put ``package`` in /data as PackageManager does: the old directory goes as a whole."""
    target = pkg(root)
    temp = target.with_name(f"{PACKAGE_NAME}-temp")
    if target.exists():
        target.rename(temp)
    shutil.copytree(package, target, symlinks=True)
    shutil.rmtree(temp, ignore_errors=True)


def pm_setup(
    action: str, *, root: Path, bare: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``setup <action> runFromPm`` as PackageManager does: directly, stderr kept apart."""
    return subprocess.run(
        [str(pkg(root) / "setup"), action, "runFromPm"],
        env=gx_env(root, bare),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pm_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == EXIT_SUCCESS, (result.stdout, result.stderr)
    return result.stdout


def snapshot(root: Path) -> Dict[str, str]:
    """Return every path under ``root`` with its kind, mode and content digest."""
    tree: Dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            tree[rel] = "dir"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            tree[rel] = f"{stat.S_IMODE(path.stat().st_mode):o} {digest}"
    return tree


def marked_lines(path: Path) -> List[str]:
    return [line for line in path.read_text().splitlines() if RC_LOCAL_MARK in line]


def profile(root: Path) -> Path:
    """Return root's ~/.profile on the GX (/home/root is a link to /data/home/root)."""
    return root / "data" / "home" / "root" / ".profile"


def rc_local(root: Path) -> Path:
    return root / "data" / "rc.local"


def pkg(root: Path) -> Path:
    return root / "data" / PACKAGE_NAME


def options(root: Path) -> Path:
    return root / "data" / "setupOptions" / PACKAGE_NAME


def installed_version(root: Path) -> Path:
    return root / "etc" / "venus" / f"installedVersion-{PACKAGE_NAME}"


def supervised(root: Path) -> Path:
    """Return the service directory svscan watches (a copy, as SetupHelper makes it)."""
    return root / "service" / PACKAGE_NAME


def rootfs_service(root: Path) -> Path:
    return root / "opt" / "victronenergy" / "service" / PACKAGE_NAME


def write_config(root: Path, *, port: int, fast_fail: bool = False) -> Path:
    """Put a config for a broker on ``port`` where setup will find (and keep) it."""
    venus: Dict[str, object] = {
        "transport": "mqtt",
        "host": "127.0.0.1",
        "port": port,
        "portal_id": DEFAULT_PORTAL_ID,
        "keepalive_interval_s": 1,
        "full_publish_timeout_s": 0.5 if fast_fail else 2,
        "heartbeat_timeout_s": 30,
        "reconnect_max_s": 1,
    }
    data = {
        "control": {
            "max_inverter_power_w": 3000,
            "tick_s": 0.1,
            "stale_after_s": 5,
            "refresh_s": 1,
            # control.md's share (0.8 * PV - 20) rather than the tuned default: 1000 W -> 750 W.
            "pv_factor": 0.8,
            "pv_offset_w": 20,
        },
        # The default actuator (auto: the hub4 override where the GX has it), its PV share
        # pinned at 1.0 x DC PV rather than the tuned default: 1000 W -> 1000 W.
        "actuator": {"override": {"pv_factor": 1.0}},
        "venus": venus,
        "homeassistant": {"enabled": False},
        # On a GX the default; here the fake root's.
        "state_dir": str(options(root)),
        "log_level": "INFO",
    }
    path = options(root) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# -- the tarball ---------------------------------------------------------------------------


def test_tarball_is_a_package_packagemanager_takes_from_a_usb_stick(tarball: Path) -> None:
    # PackageManager: the name up to the first "-" is the package; "-<digit>" marks a version.
    assert tarball.name == archive_name(__version__) == f"VenusPrio-{__version__}.tar.gz"
    assert tarball.name.split("-", 1)[0] == PACKAGE_NAME
    assert re.search(r"-[0-9]", tarball.name)
    assert re.fullmatch(r"[A-Za-z0-9]+", PACKAGE_NAME)
    reserved = "conf db etc home keys log lost+found setupOptions themes tmp var venus"
    assert PACKAGE_NAME not in [*reserved.split(), "vrmfilescache"]
    with tarfile.open(tarball) as archive:
        members = {m.name: m for m in archive.getmembers()}
        version = archive.extractfile(f"{PACKAGE_NAME}/version")
        assert version is not None
        assert version.read().decode() == f"{package_version(__version__)}\n"
    names = set(members)
    assert all(n == PACKAGE_NAME or n.startswith(f"{PACKAGE_NAME}/") for n in names)
    for required in (
        "venus_prio/__main__.py",
        "venus_prio/service.py",
        "vendor/aiomqtt/__init__.py",
        "vendor/paho/mqtt/client.py",
        "vendor/dbus_next/aio/message_bus.py",
        "vendor/yaml/__init__.py",
        "vendor/typing_extensions.py",
        "config.example.yaml",
        "version",
    ):
        assert f"{PACKAGE_NAME}/{required}" in names, required
    # No gitHubInfo: there is no GitHub repository of that name to vouch for.
    assert f"{PACKAGE_NAME}/gitHubInfo" not in names
    for script in SCRIPTS:
        assert members[f"{PACKAGE_NAME}/{script}"].mode == 0o755, script
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n]
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


def test_shipped_config_talks_to_the_local_broker(bundle: Path) -> None:
    config = load_config(bundle / "config.example.yaml", env={})
    assert config.venus.transport == "auto"
    assert config.venus.broker.host == "127.0.0.1"
    assert config.state_dir is None  # /data/setupOptions/VenusPrio on the GX


def test_run_scripts_cap_memory_use_only_the_vendored_path_and_log_like_victron(
    bundle: Path,
) -> None:
    run = (bundle / SERVICE / "run").read_text()
    assert "exec 2>&1" in run
    assert f"exec softlimit -d {MEMORY_LIMIT_BYTES} " in run
    assert '"$root/data/VenusPrio/bin/venus-prio" run' in run
    assert '--config "$root/data/setupOptions/VenusPrio/config.yaml"' in run
    wrapper = (bundle / "bin" / "venus-prio").read_text()
    assert 'PYTHONPATH="$root/vendor:$root"' in wrapper
    assert 'exec python3 -m venus_prio "$@"' in wrapper
    log_run = (bundle / SERVICE / "log" / "run").read_text()
    assert 'exec multilog t s25000 n4 "$root/var/log/VenusPrio"' in log_run


def test_vendored_dependencies_import_on_a_bare_python(bundle: Path, bare_python: Path) -> None:
    python = str(bare_python / "python3")
    bare = subprocess.run([python, "-c", "import yaml"], stderr=subprocess.PIPE, check=False)
    assert bare.returncode != 0, "the bare venv must not have PyYAML"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = f"{bundle / 'vendor'}{os.pathsep}{bundle}"
    probe = (
        "import sys, aiomqtt, paho.mqtt.client, dbus_next.aio, typing_extensions, yaml\n"
        "import venus_prio.service, venus_prio.venus.mqtt\n"
        "print(sys.version_info[:2], yaml.__with_libyaml__, aiomqtt.__file__)\n"
    )
    out = subprocess.run(
        [python, "-c", probe], env=env, stdout=subprocess.PIPE, check=True
    ).stdout.decode()
    assert out.split(")")[0] == str(sys.version_info[:2]).rstrip(")")
    assert "False" in out  # PyYAML's pure-Python implementation
    assert str(bundle / "vendor" / "aiomqtt") in out
    checked = subprocess.run(
        [python, "-m", "venus_prio", "check-config", str(bundle / "config.example.yaml")],
        env=env,
        stdout=subprocess.PIPE,
        check=True,
    ).stdout.decode()
    assert "transport: auto" in checked


def test_scripts_are_posix_and_shellcheck_clean(bundle: Path) -> None:
    shellcheck = require_tool("shellcheck", "shellcheck")
    for script in SCRIPTS:
        assert (bundle / script).read_text().startswith("#!/bin/sh\n"), script
    result = subprocess.run(
        [shellcheck, "--shell=sh", *(str(bundle / s) for s in SCRIPTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


# -- setup as PackageManager calls it ------------------------------------------------------


def test_setup_checks_installs_reinstalls_and_uninstalls_as_packagemanager_calls_it(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    before = snapshot(gx_root)
    pm_place(bundle, gx_root)
    assert pm_ok(pm_setup("check", root=gx_root, bare=bare_python)) == ""
    assert not installed_version(gx_root).exists()

    out = pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
    assert f"{package_version(__version__)} installed" in out
    assert installed_version(gx_root).read_text() == (bundle / "version").read_text()
    for where in (supervised(gx_root), rootfs_service(gx_root)):
        for script in ("run", "log/run"):
            assert (where / script).read_bytes() == (bundle / SERVICE / script).read_bytes()
            assert os.access(where / script, os.X_OK)
    services = gx_root / "etc/venus/installedModifications" / f"installedServices-{PACKAGE_NAME}"
    assert services.read_text() == f"{PACKAGE_NAME}\n"
    config = options(gx_root) / "config.yaml"
    assert config.read_bytes() == (bundle / "config.example.yaml").read_bytes()
    assert marked_lines(profile(gx_root)) == [f'PATH="$PATH:{pkg(gx_root)}/bin"  {RC_LOCAL_MARK}']
    assert not rc_local(gx_root).exists()  # PackageManager reinstalls after firmware updates

    # The config is the owner's: an install of the same version again keeps it.
    edited = config.read_text().replace("max_inverter_power_w: 3000", "max_inverter_power_w: 4200")
    assert edited != config.read_text()
    config.write_text(edited)
    pm_place(bundle, gx_root)
    pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
    assert config.read_text() == edited
    assert len(marked_lines(profile(gx_root))) == 1
    assert "is installed already" in pm_ok(pm_setup("reinstall", root=gx_root, bare=bare_python))

    out = pm_ok(pm_setup("uninstall", root=gx_root, bare=bare_python))
    assert "your config and journal stay" in out
    assert not installed_version(gx_root).exists()
    assert not supervised(gx_root).exists() and not rootfs_service(gx_root).exists()
    assert config.read_text() == edited
    assert (options(gx_root) / "DO_NOT_AUTO_INSTALL").exists()  # PackageManager's flag
    assert not profile(gx_root).exists()
    # Installed again later, it takes the kept config up.
    pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
    assert config.read_text() == edited
    assert not (options(gx_root) / "DO_NOT_AUTO_INSTALL").exists()

    # Uninstalled with --purge (from a shell) and the package removed: no trace.
    result = subprocess.run(
        [str(pkg(gx_root) / "setup"), "uninstall", "--purge"],
        env=gx_env(gx_root, bare_python),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result
    shutil.rmtree(pkg(gx_root))  # PackageManager's "remove"
    after = {k: v for k, v in snapshot(gx_root).items() if not k.startswith(("etc", "opt"))}
    assert after == {**before, "data/setupOptions": "dir"}


def test_a_failed_install_leaves_nothing_running_and_says_which_key(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    config = options(gx_root) / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("control:\n  max_inverter_power_w: 3000\n  prio_band: -5\n")
    kept = config.read_bytes()
    pm_place(bundle, gx_root)
    result = pm_setup("install", root=gx_root, bare=bare_python)
    assert result.returncode == EXIT_ERROR, result
    # PackageManager shows stderr as the reason.
    assert "control.prio_band" in result.stderr and f"fix {config}" in result.stderr
    assert not installed_version(gx_root).exists()
    assert not supervised(gx_root).exists() and not rootfs_service(gx_root).exists()
    assert config.read_bytes() == kept
    # Fixed, it installs.
    config.write_text("control:\n  max_inverter_power_w: 3000\n")
    pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
    assert installed_version(gx_root).exists() and supervised(gx_root).is_dir()


def test_uninstall_fails_clearly_when_the_users_value_cannot_be_handed_back(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    nowhere = reserve_port()  # nothing listens there (and no parallel test run starts to)
    try:
        write_config(gx_root, port=nowhere.port, fast_fail=True)
        pm_place(bundle, gx_root)
        pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
        journal = journal_path(options(gx_root))
        dirty = Journal(
            portal_id=DEFAULT_PORTAL_ID, baseline_w=BASELINE, last_written_w=750.0, clean=False
        )
        save_journal(journal, dirty)
        result = pm_setup("uninstall", root=gx_root, bare=bare_python)
    finally:
        nowhere.release()
    assert result.returncode == EXIT_ERROR, result
    assert "could not write your MaxDischargePower back" in result.stderr
    assert "setup uninstall --force" in result.stderr
    # Still installed (it starts again at boot); the journal keeps the user's value.
    assert installed_version(gx_root).exists() and rootfs_service(gx_root).is_dir()
    assert load_journal(journal) == dirty

    forced = subprocess.run(
        [str(pkg(gx_root) / "setup"), "uninstall", "--force", "--purge"],
        env=gx_env(gx_root, bare_python),
        capture_output=True,
        text=True,
        check=False,
    )
    assert forced.returncode == 0, forced
    assert "set it in the GUI" in forced.stdout
    assert not installed_version(gx_root).exists()
    # The user's value must not be lost with the files: the journal stays even when purged.
    assert load_journal(journal) == dirty


def test_an_installation_in_the_previous_layout_is_moved_over(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    # What the previous install.sh left: everything in /data/venus-prio, a link in /service,
    # a boot line in rc.local and a PATH line in .profile.
    old = gx_root / "data" / "venus-prio"
    (old / "service" / "log").mkdir(parents=True)
    (old / "venus_prio").mkdir()
    (old / "service" / "run").write_text("#!/bin/sh\n")
    config = "control:\n  max_inverter_power_w: 4321\n"
    (old / "config.yaml").write_text(config)
    journal = Journal(
        portal_id=DEFAULT_PORTAL_ID, baseline_w=BASELINE, last_written_w=None, clean=True
    )
    save_journal(journal_path(old), journal)
    (gx_root / "service" / "venus-prio").symlink_to(old / "service")
    rc_local(gx_root).write_text(f"#!/bin/sh\nln -sfn x y  {RC_LOCAL_MARK}\n")
    profile(gx_root).write_text(f'# mine\nPATH="$PATH:{old}/bin"  {RC_LOCAL_MARK}\n')

    pm_place(bundle, gx_root)
    out = pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
    assert "moving the installation" in out
    assert (options(gx_root) / "config.yaml").read_text() == config
    assert load_journal(journal_path(options(gx_root))) == journal
    assert not old.exists() and not (gx_root / "service" / "venus-prio").is_symlink()
    assert not rc_local(gx_root).exists()  # only our line was in it
    assert profile(gx_root).read_text() == (
        f'# mine\nPATH="$PATH:{pkg(gx_root)}/bin"  {RC_LOCAL_MARK}\n'
    )


# -- the SSH route: install.sh / uninstall.sh -----------------------------------------------


def test_install_sh_installs_the_same_layout_and_reinstalls_after_a_firmware_update(
    bundle: Path, bare_python: Path, gx_root: Path, tmp_path: Path
) -> None:
    rc = rc_local(gx_root)
    original = "#!/bin/bash\n# mine\necho hello >/dev/null\n\nexit 0\n"
    rc.write_text(original)
    rc.chmod(0o700)
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    assert (pkg(gx_root) / "version").read_text() == (bundle / "version").read_text()
    assert installed_version(gx_root).exists() and supervised(gx_root).is_dir()
    assert (options(gx_root) / "config.yaml").is_file()
    lines = rc.read_text().splitlines()
    assert lines[:4] == ["#!/bin/bash", "# mine", "echo hello >/dev/null", ""]
    assert RC_LOCAL_MARK in lines[4] and lines[5:] == ["exit 0"]
    assert stat.S_IMODE(rc.stat().st_mode) == 0o700
    (pkg(gx_root) / "venus_prio" / "stale_module.py").write_text("# from an old version\n")
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))  # an update
    assert not (pkg(gx_root) / "venus_prio" / "stale_module.py").exists()
    assert len(marked_lines(rc)) == 1

    # A firmware update replaces the root filesystem; /service is a RAM disk.
    for wiped in (gx_root / "etc", gx_root / "opt", supervised(gx_root)):
        shutil.rmtree(wiped)
    subprocess.run([str(rc)], env=gx_env(gx_root, bare_python), check=True)
    assert installed_version(gx_root).exists() and supervised(gx_root).is_dir()
    boot = subprocess.run([str(rc)], env=gx_env(gx_root, bare_python), check=True)
    assert boot.returncode == 0  # and again: nothing to do

    # The command: on the PATH of a login shell, through a link elsewhere too; a PYTHONPATH
    # of the caller's must not reach it (this yaml would break it).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "yaml.py").write_text("raise ImportError('not the vendored yaml')\n")
    env = gx_env(gx_root, bare_python)
    env["PYTHONPATH"] = str(elsewhere)
    config = options(gx_root) / "config.yaml"
    shell = '. "$1" && cd / && command -v venus-prio && venus-prio check-config "$2"'
    result = subprocess.run(
        ["sh", "-c", shell, "sh", str(profile(gx_root)), str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result
    assert result.stdout.splitlines()[0] == str(pkg(gx_root) / "bin" / "venus-prio")
    assert "transport: auto" in result.stdout

    out = ok(sh(pkg(gx_root) / "uninstall.sh", root=gx_root, bare=bare_python))
    assert "your config and journal stay" in out
    assert not pkg(gx_root).exists() and config.is_file()
    assert rc.read_text() == original
    assert stat.S_IMODE(rc.stat().st_mode) == 0o700


def test_boot_line_leaves_the_reinstall_to_packagemanager_when_there(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    (gx_root / "data" / "SetupHelper").mkdir()
    installed_version(gx_root).unlink()  # a firmware update
    subprocess.run([str(rc_local(gx_root))], env=gx_env(gx_root, bare_python), check=True)
    assert not installed_version(gx_root).exists()


BUSYBOX_APPLETS = (
    "sh", "awk", "basename", "cat", "chmod", "cp", "dirname", "grep", "ln", "ls", "mkdir", "mv",
    "printf", "rm", "sleep", "tr",
)  # fmt: skip


def test_scripts_work_with_busybox_tools_only(
    bundle: Path, bare_python: Path, gx_root: Path, tmp_path: Path
) -> None:
    busybox = require_tool("busybox", "busybox")
    # The GX's shell tools are BusyBox: a PATH with nothing else but python3.
    tools = tmp_path / "busybox-bin"
    tools.mkdir()
    for applet in BUSYBOX_APPLETS:
        (tools / applet).symlink_to(busybox)
    (tools / "python3").symlink_to(bare_python / "python3")
    rc = rc_local(gx_root)
    rc.write_text("#!/bin/sh\necho mine\nexit 0\n")
    rc.chmod(0o755)
    before = snapshot(gx_root)
    env = {"PATH": str(tools), "VENUS_PRIO_ROOT": str(gx_root)}

    def run(script: Path, *args: str) -> str:
        result = subprocess.run(
            [str(tools / "sh"), str(script), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        return ok(result)

    run(bundle / "install.sh")
    run(bundle / "install.sh")
    assert rc.read_text().splitlines()[3:] == ["exit 0"] and len(marked_lines(rc)) == 1
    assert len(marked_lines(profile(gx_root))) == 1
    assert run(pkg(gx_root) / "bin" / "venus-prio", "--version") == f"venus-prio {__version__}\n"
    assert installed_version(gx_root).exists() and supervised(gx_root).is_dir()
    run(pkg(gx_root) / "uninstall.sh", "--purge")
    after = {k: v for k, v in snapshot(gx_root).items() if not k.startswith(("etc", "opt"))}
    assert after == {**before, "data/setupOptions": "dir"}


# -- the installed service under daemontools -----------------------------------------------


class Svscan:
    """svscan on the fake root's /service, with the bare python3 first on PATH."""

    def __init__(self, root: Path, bare: Path) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [require_tool("svscan", "daemontools"), str(root / "service")],
            env=gx_env(root, bare),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: teardown can end every child
        )

    def status(self, service: Path) -> str:
        result = subprocess.run(
            ["svstat", str(service)], stdout=subprocess.PIPE, text=True, check=False
        )
        return result.stdout

    def pid(self, service: Path) -> Optional[int]:
        match = re.search(r": up \(pid (\d+)\)", self.status(service))
        return int(match.group(1)) if match else None

    def close(self) -> None:
        """Stop everything it started (the supervised service first), then svscan itself."""
        service = supervised(self.root)
        if service.is_dir():
            parked = service.with_name(f".{PACKAGE_NAME}.closing")
            service.rename(parked)  # or svscan starts a new supervise within 5 s
            service = parked
        for each in (service, service / "log"):
            if subprocess.run(["svok", str(each)], check=False).returncode == 0:
                subprocess.run(["svc", "-dx", str(each)], check=False)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(
            subprocess.run(["svok", str(s)], check=False).returncode == 0
            for s in (service, service / "log")
        ):
            time.sleep(0.1)
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of our own group


def steering_since(gx: FakeGx) -> Callable[[], bool]:
    """Return a check for a new override write (a restarted service steering) from now on."""
    before = len(gx.write_log.values(paths.OVERRIDE_MAX_DISCHARGE))
    return lambda: len(gx.write_log.values(paths.OVERRIDE_MAX_DISCHARGE)) > before


def _log_text(root: Path) -> str:
    current = root / "var" / "log" / PACKAGE_NAME / "current"
    return current.read_text(errors="replace") if current.exists() else ""


def test_packagemanager_installs_upgrades_and_uninstalls_the_running_service(  # noqa: PLR0917
    bundle: Path,
    upgrade: Path,
    bare_python: Path,
    gx_root: Path,
    mosquitto: Broker,
    fake_gx: FakeGxFactory,
) -> None:
    for tool in DAEMONTOOLS:
        require_tool(tool, "daemontools")
    config = write_config(gx_root, port=mosquitto.port)
    pm_place(bundle, gx_root)
    pm_ok(pm_setup("install", root=gx_root, bare=bare_python))
    service = supervised(gx_root)

    async def scenario() -> None:
        async with fake_gx() as gx:
            gx.items[paths.SOC.topic_suffix()].value = 12.0  # floor 10 %
            gx.items[paths.PV_DC.topic_suffix()].value = 1000.0
            gx.items[paths.MAX_DISCHARGE_POWER.topic_suffix()].value = BASELINE
            scanner = Svscan(gx_root, bare_python)
            loop = asyncio.get_running_loop()

            async def restarted(before: Optional[int], *, starts: int, by: str) -> None:
                """Wait until a new process replaced ``before`` and logged start ``starts``."""
                await eventually(
                    lambda: scanner.pid(service) not in (None, before),
                    timeout=15.0,
                    what=f"{by} restarting the service",
                )
                await eventually(
                    lambda: _log_text(gx_root).count("venus-prio running") >= starts,
                    timeout=15.0,
                    what=f"start {starts} logged",
                )

            try:
                # svscan finds the copy in /service, supervise starts run (softlimit + vendor).
                await eventually(lambda: gx.override_w == 1000.0, timeout=30.0, what="steering")
                await eventually(
                    lambda: "Wrote the override 1000 W" in _log_text(gx_root),
                    what="the write logged through multilog",
                )
                first = _log_text(gx_root).splitlines()[0]
                assert re.match(r"@4000[0-9a-f]{20} ", first), first  # multilog's t stamp
                journal = journal_path(options(gx_root))
                assert f"journal {journal}" in _log_text(gx_root)

                # supervise restarts a killed service; it takes up from the journal.
                pid = scanner.pid(service)
                assert pid is not None, scanner.status(service)
                limits = Path(f"/proc/{pid}/limits").read_text()
                assert re.search(rf"Max data size\s+{MEMORY_LIMIT_BYTES}\s", limits), limits
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                vendor = f"PYTHONPATH={pkg(gx_root)}/vendor:{pkg(gx_root)}".encode()
                assert vendor in environ
                os.kill(pid, signal.SIGKILL)
                await restarted(pid, starts=2, by="supervise")
                await eventually(
                    lambda: (
                        "Baseline MaxDischargePower 2500 W (from the journal" in _log_text(gx_root)
                    ),
                    timeout=15.0,
                    what="the restarted service taking the baseline from its journal",
                )
                await eventually(steering_since(gx), what="steering after the restart")

                # The owner changes the config; then PackageManager downloads a new version:
                # the package directory replaced as a whole, setup install run again.
                edited = config.read_text().replace("pv_offset_w: 20", "pv_offset_w: 30")
                assert edited != config.read_text()
                config.write_text(edited)
                kept_journal = load_journal(journal)
                assert kept_journal is not None and kept_journal.baseline_w == BASELINE
                running = scanner.pid(service)

                def pm_upgrade() -> subprocess.CompletedProcess[str]:
                    pm_place(upgrade, gx_root)
                    return pm_setup("install", root=gx_root, bare=bare_python)

                result = await loop.run_in_executor(None, pm_upgrade)
                assert result.returncode == 0, (result.stdout, result.stderr)
                assert "service restarted on the new version" in result.stdout
                assert installed_version(gx_root).read_text() == "v99.0.0\n"
                assert (pkg(gx_root) / "venus_prio" / "new_module.py").is_file()
                await restarted(running, starts=3, by="the upgrade")
                await eventually(steering_since(gx), what="steering after the upgrade")
                assert config.read_text() == edited
                upgraded = load_journal(journal)
                assert upgraded is not None and upgraded.baseline_w == BASELINE

                # Uninstall: stopped by daemontools (SIGTERM releases the override), restored.
                result = await loop.run_in_executor(
                    None, lambda: pm_setup("uninstall", root=gx_root, bare=bare_python)
                )
                assert result.returncode == 0, (result.stdout, result.stderr)
                assert gx.override_w == -1.0
                assert gx.write_log.values(paths.OVERRIDE_MAX_DISCHARGE)[-1] == -1
                # The user's setting was never written: the override did all the steering.
                assert gx.write_log.values(paths.MAX_DISCHARGE_POWER) == []
                assert gx.setting == BASELINE
                assert not service.exists() and not installed_version(gx_root).exists()
                assert config.read_text() == edited and journal.is_file()
                assert not [p for p in (gx_root / "service").iterdir()]
            finally:
                # Shown by pytest when the test fails: what the service said, what the GX got.
                print(f"writes: {[w.value for w in gx.writes]}\nlog:\n{_log_text(gx_root)}")
                await loop.run_in_executor(None, scanner.close)

    run_async(scenario(), timeout=180.0)


def test_tarball_bytes_depend_on_content_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    tarballs = []
    for attempt in ("a", "b"):
        tree = tmp_path / attempt / PACKAGE_NAME
        (tree / "setup").parent.mkdir(parents=True)
        (tree / "setup").write_text("#!/bin/sh\n")
        (tree / "setup").chmod(0o700 if attempt == "a" else 0o775)
        (tree / "config.example.yaml").write_text("control: {}\n")
        os.utime(tree / "config.example.yaml", (1, 1) if attempt == "a" else (2_000_000_000,) * 2)
        out = tmp_path / f"{attempt}.tar.gz"
        write_tarball(tree, out)
        tarballs.append(out.read_bytes())
    assert tarballs[0] == tarballs[1]
    with tarfile.open(tmp_path / "a.tar.gz") as archive:
        setup = archive.getmember(f"{PACKAGE_NAME}/setup")
    assert (setup.mode, setup.mtime, setup.uname) == (0o755, 1_700_000_000, "root")
