"""The GX add-on bundle: build, install into a fake root, run under daemontools, uninstall.

The bundle is built for real (``pip download`` from the package registry), unpacked with tar
like a user would, and installed with its own ``install.sh`` into a temporary root given by
``VENUS_PRIO_ROOT``. The service then runs under Debian's daemontools (svscan, supervise,
multilog, softlimit) with a Python that has none of the dependencies installed, so only the
vendored copies can satisfy the imports, against the fake GX on a real Mosquitto broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
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
from venus_prio.bundle import MEMORY_LIMIT_BYTES, RC_LOCAL_MARK, build_bundle, write_tarball
from venus_prio.config import load_config
from venus_prio.fakes.mqtt_gx import DEFAULT_PORTAL_ID, FakeGx
from venus_prio.journal import Journal, journal_path, load_journal, save_journal
from venus_prio.venus import paths

pytestmark = pytest.mark.integration

SCRIPTS = ("install.sh", "uninstall.sh", "service/run", "service/log/run", "bin/venus-prio")
DAEMONTOOLS = ("svscan", "supervise", "svc", "svok", "svstat", "multilog", "softlimit")
BASELINE = 2500.0


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
    """Unpack the bundle with tar, as on the GX; return its ``venus-prio/`` directory."""
    where = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(where)], check=True)
    return where / "venus-prio"


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


def rc_lines(root: Path) -> List[str]:
    return marked_lines(rc_local(root))


def marked_lines(path: Path) -> List[str]:
    return [line for line in path.read_text().splitlines() if RC_LOCAL_MARK in line]


def profile(root: Path) -> Path:
    """Return root's ~/.profile on the GX (/home/root is a link to /data/home/root)."""
    return root / "data" / "home" / "root" / ".profile"


def rc_local(root: Path) -> Path:
    return root / "data" / "rc.local"


def dest(root: Path) -> Path:
    return root / "data" / "venus-prio"


def write_config(root: Path, *, port: int, fast_fail: bool = False) -> Path:
    """Put a config for a broker on ``port`` where install.sh will find (and keep) it."""
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
        "state_dir": str(dest(root)),
        "log_level": "INFO",
    }
    path = dest(root) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# -- the tarball ---------------------------------------------------------------------------


def test_tarball_holds_package_vendored_dependencies_and_service(tarball: Path) -> None:
    assert tarball.name == f"venus-prio-{__version__}.tar.gz"
    with tarfile.open(tarball) as archive:
        members = {m.name: m for m in archive.getmembers()}
    names = set(members)
    assert all(name == "venus-prio" or name.startswith("venus-prio/") for name in names)
    for required in (
        "venus-prio/venus_prio/__main__.py",
        "venus-prio/venus_prio/service.py",
        "venus-prio/vendor/aiomqtt/__init__.py",
        "venus-prio/vendor/paho/mqtt/client.py",
        "venus-prio/vendor/dbus_next/aio/message_bus.py",
        "venus-prio/vendor/yaml/__init__.py",
        "venus-prio/vendor/typing_extensions.py",
        "venus-prio/config.yaml",
    ):
        assert required in names, required
    for script in SCRIPTS:
        assert members[f"venus-prio/{script}"].mode == 0o755, script
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n]
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


def test_shipped_config_talks_to_the_local_broker(bundle: Path) -> None:
    config = load_config(bundle / "config.yaml", env={})
    assert config.venus.transport == "auto"
    assert config.venus.broker.host == "127.0.0.1"
    assert config.state_dir is None  # /data/venus-prio on the GX


def test_run_script_caps_memory_and_uses_only_the_vendored_path(bundle: Path) -> None:
    run = (bundle / "service" / "run").read_text()
    assert "exec 2>&1" in run
    command = '"$root/bin/venus-prio" run --config "$root/config.yaml"'
    assert f"exec softlimit -d {MEMORY_LIMIT_BYTES} {command}" in run
    wrapper = (bundle / "bin" / "venus-prio").read_text()
    assert 'PYTHONPATH="$root/vendor:$root"' in wrapper
    assert 'exec python3 -m venus_prio "$@"' in wrapper
    log_run = (bundle / "service" / "log" / "run").read_text()
    assert 'exec multilog t s25000 n4 "$prefix/var/log/venus-prio"' in log_run


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
        [python, "-m", "venus_prio", "check-config", str(bundle / "config.yaml")],
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


# -- install / uninstall -------------------------------------------------------------------


def test_install_twice_links_the_service_and_adds_one_boot_line(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    out = ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    assert f"venus-prio {__version__} installed" in out
    target = dest(gx_root)
    for item in ("venus_prio/cli.py", "vendor/yaml/__init__.py", "config.yaml", *SCRIPTS):
        assert (target / item).is_file(), item
    for script in SCRIPTS:
        assert os.access(target / script, os.X_OK), script
    link = gx_root / "service" / "venus-prio"
    assert link.is_symlink() and link.resolve() == (target / "service").resolve()
    rc = rc_local(gx_root)
    assert rc.read_text().startswith("#!/bin/sh\n") and os.access(rc, os.X_OK)
    assert len(rc_lines(gx_root)) == 1
    assert marked_lines(profile(gx_root)) == [f'PATH="$PATH:{target}/bin"  {RC_LOCAL_MARK}']

    # The config is the user's from now on: a reinstall keeps it.
    config = target / "config.yaml"
    edited = config.read_text().replace("max_inverter_power_w: 3000", "max_inverter_power_w: 4200")
    assert edited != config.read_text()
    config.write_text(edited)
    (target / "venus_prio" / "stale_module.py").write_text("# from an old version\n")
    out = ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    assert "keeping your" in out
    assert config.read_text() == edited
    assert not (target / "venus_prio" / "stale_module.py").exists()
    assert len(rc_lines(gx_root)) == 1
    assert len(marked_lines(profile(gx_root))) == 1


def test_the_venus_prio_command_runs_on_a_bare_python(
    bundle: Path, bare_python: Path, gx_root: Path, tmp_path: Path
) -> None:
    home = profile(gx_root)
    home.write_text("# mine\nalias ll='ls -l'\n")
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    command = dest(gx_root) / "bin" / "venus-prio"
    links = tmp_path / "links"
    links.mkdir()
    (links / "venus-prio").symlink_to(command)
    # A PYTHONPATH of the caller's must not reach the command: this yaml would break it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "yaml.py").write_text("raise ImportError('not the vendored yaml')\n")
    env = gx_env(gx_root, bare_python)
    env["PYTHONPATH"] = str(elsewhere)
    config = dest(gx_root) / "config.yaml"
    # As a login shell finds it (~/.profile), and through a link in another directory.
    for how, shell in [
        ("profile", '. "$1" && cd / && command -v venus-prio && venus-prio "$2" "$3"'),
        ("link", 'cd / && "$4" "$2" "$3"'),
    ]:
        result = subprocess.run(
            [
                "sh",
                "-c",
                shell,
                "sh",
                str(home),
                "check-config",
                str(config),
                str(links / "venus-prio"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        out = ok(result)
        assert "transport: auto" in out, how
        if how == "profile":
            assert out.splitlines()[0] == str(command)
    assert home.read_text().startswith("# mine\nalias ll='ls -l'\n")
    ok(sh(dest(gx_root) / "uninstall.sh", "--purge", root=gx_root, bare=bare_python))
    assert home.read_text() == "# mine\nalias ll='ls -l'\n"


def test_boot_line_relinks_the_service(bundle: Path, bare_python: Path, gx_root: Path) -> None:
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    link = gx_root / "service" / "venus-prio"
    link.unlink()  # /service is a RAM disk: empty after a reboot
    subprocess.run([str(rc_local(gx_root))], check=True)
    assert link.resolve() == (dest(gx_root) / "service").resolve()
    subprocess.run([str(rc_local(gx_root))], check=True)  # idempotent
    assert link.resolve() == (dest(gx_root) / "service").resolve()
    assert sorted(p.name for p in (gx_root / "service").iterdir()) == ["venus-prio"]


def test_install_keeps_the_users_rc_local_and_its_final_exit(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    rc = rc_local(gx_root)
    original = "#!/bin/bash\n# mine\necho hello >/dev/null\n\nexit 0\n"
    rc.write_text(original)
    rc.chmod(0o700)
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    lines = rc.read_text().splitlines()
    assert lines[:4] == ["#!/bin/bash", "# mine", "echo hello >/dev/null", ""]
    assert RC_LOCAL_MARK in lines[4] and lines[5:] == ["exit 0"]
    assert stat.S_IMODE(rc.stat().st_mode) == 0o700
    ok(sh(dest(gx_root) / "uninstall.sh", root=gx_root, bare=bare_python))
    assert rc.read_text() == original
    assert stat.S_IMODE(rc.stat().st_mode) == 0o700


@pytest.mark.parametrize("purge", [False, True])
def test_uninstall_leaves_no_trace(
    bundle: Path, bare_python: Path, gx_root: Path, purge: bool
) -> None:
    before = snapshot(gx_root)
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    config = (dest(gx_root) / "config.yaml").read_bytes()
    args = ["--purge"] if purge else []
    ok(sh(dest(gx_root) / "uninstall.sh", *args, root=gx_root, bare=bare_python))
    after = snapshot(gx_root)
    if purge:
        assert after == before
    else:
        kept = {k: v for k, v in after.items() if k not in before}
        assert sorted(kept) == ["data/venus-prio", "data/venus-prio/config.yaml"]
        assert (dest(gx_root) / "config.yaml").read_bytes() == config
        # A later install takes the kept config up again.
        ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
        assert (dest(gx_root) / "config.yaml").read_bytes() == config


BUSYBOX_APPLETS = (
    "sh", "awk", "cat", "chmod", "cp", "dirname", "grep", "ln", "ls", "mkdir", "mv", "printf",
    "rm", "sleep", "tr",
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
    assert rc.read_text().splitlines()[3:] == ["exit 0"] and len(rc_lines(gx_root)) == 1
    assert len(marked_lines(profile(gx_root))) == 1
    assert run(dest(gx_root) / "bin" / "venus-prio", "--version") == f"venus-prio {__version__}\n"
    link = gx_root / "service" / "venus-prio"
    assert link.resolve() == (dest(gx_root) / "service").resolve()
    run(dest(gx_root) / "uninstall.sh", "--purge")
    assert snapshot(gx_root) == before


def test_install_refuses_to_start_on_a_bad_config(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    config = dest(gx_root) / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("control:\n  max_inverter_power_w: 3000\n  prio_band: -5\n")
    result = sh(bundle / "install.sh", root=gx_root, bare=bare_python)
    assert result.returncode == 1
    assert "control.prio_band" in result.stdout and "fix " in result.stdout
    assert not (gx_root / "service" / "venus-prio").exists()
    assert not rc_local(gx_root).exists()
    assert not profile(gx_root).exists()


def test_uninstall_refuses_when_the_baseline_cannot_be_restored(
    bundle: Path, bare_python: Path, gx_root: Path
) -> None:
    nowhere = reserve_port()  # nothing listens there (and no parallel test run starts to)
    try:
        uninstall_refuses(bundle, bare_python, gx_root, nowhere.port)
    finally:
        nowhere.release()


def uninstall_refuses(bundle: Path, bare_python: Path, gx_root: Path, port: int) -> None:
    write_config(gx_root, port=port, fast_fail=True)
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    journal = journal_path(dest(gx_root))
    dirty = Journal(
        portal_id=DEFAULT_PORTAL_ID, baseline_w=BASELINE, last_written_w=750.0, clean=False
    )
    save_journal(journal, dirty)
    result = sh(dest(gx_root) / "uninstall.sh", root=gx_root, bare=bare_python)
    assert result.returncode == 1, result.stdout
    assert "could not write your MaxDischargePower back" in result.stdout
    assert (dest(gx_root) / "venus_prio").is_dir() and len(rc_lines(gx_root)) == 1

    out = ok(
        sh(dest(gx_root) / "uninstall.sh", "--force", "--purge", root=gx_root, bare=bare_python)
    )
    assert "set it in the GUI" in out
    # The user's value must not be lost with the files: the journal stays, nothing else.
    assert sorted(p.name for p in dest(gx_root).iterdir()) == ["config.yaml", "journal.json"]
    assert load_journal(journal) == dirty
    assert not rc_local(gx_root).exists()


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
        link = self.root / "service" / "venus-prio"
        if link.is_symlink():
            link.unlink()  # or svscan starts a new supervise within 5 s
        for service in (dest(self.root) / "service", dest(self.root) / "service" / "log"):
            if subprocess.run(["svok", str(service)], check=False).returncode == 0:
                subprocess.run(["svc", "-dx", str(service)], check=False)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(
            subprocess.run(["svok", str(s)], check=False).returncode == 0
            for s in (dest(self.root) / "service", dest(self.root) / "service" / "log")
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
    current = root / "var" / "log" / "venus-prio" / "current"
    return current.read_text(errors="replace") if current.exists() else ""


def test_installed_service_runs_under_daemontools_and_uninstalls(
    bundle: Path,
    bare_python: Path,
    gx_root: Path,
    mosquitto: Broker,
    fake_gx: FakeGxFactory,
) -> None:
    for tool in DAEMONTOOLS:
        require_tool(tool, "daemontools")
    write_config(gx_root, port=mosquitto.port)
    ok(sh(bundle / "install.sh", root=gx_root, bare=bare_python))
    service = dest(gx_root) / "service"

    async def scenario() -> None:
        async with fake_gx() as gx:
            gx.items[paths.SOC.topic_suffix()].value = 12.0  # floor 10 %
            gx.items[paths.PV_DC.topic_suffix()].value = 1000.0
            gx.items[paths.MAX_DISCHARGE_POWER.topic_suffix()].value = BASELINE
            scanner = Svscan(gx_root, bare_python)

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
                # svscan finds the link, supervise starts run (softlimit + the vendored path).
                await eventually(lambda: gx.override_w == 1000.0, timeout=30.0, what="steering")
                await eventually(
                    lambda: "Wrote the override 1000 W" in _log_text(gx_root),
                    what="the write logged through multilog",
                )
                first = _log_text(gx_root).splitlines()[0]
                assert re.match(r"@4000[0-9a-f]{20} ", first), first  # multilog's t stamp

                # supervise restarts a killed service; it takes up from the journal.
                pid = scanner.pid(service)
                assert pid is not None, scanner.status(service)
                limits = Path(f"/proc/{pid}/limits").read_text()
                assert re.search(rf"Max data size\s+{MEMORY_LIMIT_BYTES}\s", limits), limits
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                vendor = f"PYTHONPATH={dest(gx_root)}/vendor:{dest(gx_root)}".encode()
                assert vendor in environ
                # The override it left stays in force (the GX expires it after a minute).
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

                # An upgrade while it runs: install.sh restarts it on the new files.
                loop = asyncio.get_running_loop()
                running = scanner.pid(service)
                upgrade = await loop.run_in_executor(
                    None, lambda: sh(bundle / "install.sh", root=gx_root, bare=bare_python)
                )
                assert upgrade.returncode == 0, upgrade.stdout
                assert "installed and restarted" in upgrade.stdout
                await restarted(running, starts=3, by="the upgrade")
                await eventually(steering_since(gx), what="steering after the upgrade")

                # uninstall.sh stops it (SIGTERM releases the override) and restores.
                result = await loop.run_in_executor(
                    None,
                    lambda: sh(dest(gx_root) / "uninstall.sh", root=gx_root, bare=bare_python),
                )
                assert result.returncode == 0, result.stdout
                assert gx.override_w == -1.0
                assert gx.write_log.values(paths.OVERRIDE_MAX_DISCHARGE)[-1] == -1
                # The user's setting was never written: the override did all the steering.
                assert gx.write_log.values(paths.MAX_DISCHARGE_POWER) == []
                assert gx.setting == BASELINE
                assert sorted(p.name for p in dest(gx_root).iterdir()) == ["config.yaml"]
                assert not (gx_root / "service" / "venus-prio").exists()
                assert not rc_local(gx_root).exists()
                for path in (service, service / "log"):
                    assert subprocess.run(["svok", str(path)], check=False).returncode != 0
            finally:
                # Shown by pytest when the test fails: what the service said, what the GX got.
                print(f"writes: {[w.value for w in gx.writes]}\nlog:\n{_log_text(gx_root)}")
                await asyncio.get_running_loop().run_in_executor(None, scanner.close)

    run_async(scenario(), timeout=180.0)


def test_tarball_bytes_depend_on_content_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    tarballs = []
    for attempt in ("a", "b"):
        tree = tmp_path / attempt / "venus-prio"
        (tree / "service").mkdir(parents=True)
        (tree / "service" / "run").write_text("#!/bin/sh\n")
        (tree / "service" / "run").chmod(0o700 if attempt == "a" else 0o775)
        (tree / "config.yaml").write_text("control: {}\n")
        os.utime(tree / "config.yaml", (1, 1) if attempt == "a" else (2_000_000_000,) * 2)
        out = tmp_path / f"{attempt}.tar.gz"
        write_tarball(tree, out)
        tarballs.append(out.read_bytes())
    assert tarballs[0] == tarballs[1]
    with tarfile.open(tmp_path / "a.tar.gz") as archive:
        run = archive.getmember("venus-prio/service/run")
    assert (run.mode, run.mtime, run.uname) == (0o755, 1_700_000_000, "root")
