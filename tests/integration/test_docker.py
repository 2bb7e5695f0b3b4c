"""The Docker image: built from docker/Dockerfile with podman, run the way compose.yaml runs it.

No container registry is reachable here, so the Dockerfile's base image (its ``FROM``) is a
stand-in: Debian bookworm made by ``debootstrap`` from the Debian mirror the host's apt uses,
with Debian's python3 (3.11) and pip and the host's CA bundle, imported with ``podman import``
and tagged with the base's name. The Dockerfile itself is built as users build it. Everything
lives in a podman storage of the tests' own (``CACHE``), so the stand-in never shadows a real
``python`` image of the developer's, and the base is made once a week, not on every run.

The container runs as ``compose.yaml`` says (its keys are translated one by one, and an
unknown key fails the test) plus the host network, against the fake GX on a real Mosquitto:
it must steer, run unprivileged on a read-only root, and hand the user's value back when
``podman stop`` sends SIGTERM, within the grace period.

Rootful podman on runc (crun fails on this sandbox's hybrid cgroup layout); debootstrap needs
root too. Elsewhere the test skips loudly; in CI a missing piece fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest
import yaml

from tests.integration.conftest import Broker, eventually, run_async
from tests.integration.harness import (
    BASELINE,
    PLANT,
    ROOT,
    config_data,
    journal_at,
    mqtt_gx,
    venus_config,
    write_yaml,
)
from venus_prio.venus import paths

pytestmark = pytest.mark.integration

DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
CACHE = Path("/var/cache/venus-prio-test")  # the podman storage with the stand-in base
RUN_DIR = Path("/run/venus-prio-test")  # podman's run-time state, apart from the system's
SUITE = "bookworm"
# What the Dockerfile needs of its base: python3 with pip; ca-certificates for the bundle.
PACKAGES = ("python3", "python3-pip", "ca-certificates")
# The host's bundle, not Debian's package alone: pip in the build reaches PyPI through whatever
# CAs this host trusts (local ones included).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_REPO = "localhost/venus-prio-test/base"
IMAGE_REPO = "localhost/venus-prio-test/venus-prio"
# What the official python images set: /usr/local first on PATH, a UTF-8 locale, python3.
IMPORT_CHANGES = (
    *("--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    *("--change", "ENV LANG=C.UTF-8"),
    *("--change", 'CMD ["python3"]'),
)
TOOLS = ("podman", "runc", "debootstrap")  # each from the Debian package of its name


def unavailable(message: str) -> None:
    """Fail in CI, skip loudly elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    print(f"\nWARNING: SKIPPING THE DOCKER IMAGE TEST: {message}", file=sys.__stderr__)
    pytest.skip(f"!!! SKIPPED: {message} !!!")


def find_tool(name: str) -> Optional[str]:
    for where in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if where and os.access(where, os.X_OK):
            return where
    return None


# -- podman, configured for this machine --------------------------------------------------


def containers_conf() -> str:
    """Return a containers.conf: runc, no systemd, rlimits the machine allows.

    podman's default container rlimits are above this machine's hard limits, and without
    CAP_SYS_RESOURCE runc cannot raise them. podman also lowers its own nproc limit to
    kernel.pid_max before it starts anything, so nproc must fit under that too.
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text(encoding="ascii"))
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    if nofile == resource.RLIM_INFINITY:
        nofile = 1048576  # podman's own default
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'  # no systemd as PID 1 here
        'events_logger = "file"\n'  # no journald either
        f'tmp_dir = "{RUN_DIR / "libpod"}"\n'
    )


def storage_conf() -> str:
    return (
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{CACHE / "containers"}"\n'
        f'runroot = "{RUN_DIR / "containers"}"\n'
    )


def podman(env: Mapping[str, str], *args: str, timeout: float = 120.0) -> str:
    """Run ``podman args``; return its output, fail the test with it when podman fails."""
    result = subprocess.run(
        ["podman", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stdout}")
    return result.stdout


async def podman_async(env: Mapping[str, str], *args: str, timeout: float = 60.0) -> str:
    """``podman`` without blocking the event loop the fake GX runs in."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: podman(env, *args, timeout=timeout))


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Return the environment for podman with this test's configuration and storage."""
    if os.geteuid() != 0:
        unavailable("needs root (rootful podman; debootstrap makes the base image)")
    missing = [name for name in TOOLS if find_tool(name) is None]
    if missing:
        unavailable(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    where = tmp_path_factory.mktemp("podman")
    (where / "containers.conf").write_text(containers_conf(), encoding="utf-8")
    (where / "storage.conf").write_text(storage_conf(), encoding="utf-8")
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(where / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(where / "storage.conf")
    env["PATH"] = f"{env.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"
    return env


# -- the stand-in base ---------------------------------------------------------------------


def debian_mirror() -> str:
    """Return the Debian mirror the host's apt uses for ``SUITE`` (deb.debian.org if none)."""
    sources = Path("/etc/apt/sources.list.d")
    files = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]
    for path in [p for p in files if p.is_file()]:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and match.group(2) == SUITE:
                return match.group(1)
    for path in sorted(sources.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            fields: Dict[str, str] = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.MULTILINE))
            if (
                "deb" in fields.get("Types", "").split()
                and SUITE in fields.get("Suites", "").split()
            ):
                return fields["URIs"].split()[0]
    return "http://deb.debian.org/debian"


def base_tag() -> str:
    """Return the stand-in's tag: the suite, the packages, the CA bundle, and the week.

    The week: a new base (with Debian's updates) at most once a week, not on every run.
    """
    digest = hashlib.sha256()
    digest.update(" ".join((SUITE, *PACKAGES)).encode())
    digest.update(CA_BUNDLE.read_bytes())
    year, week, _ = datetime.date.today().isocalendar()
    return f"{BASE_REPO}:{SUITE}-{digest.hexdigest()[:12]}-{year}w{week:02d}"


def debootstrap_base(env: Mapping[str, str], tag: str) -> None:
    """Make the stand-in base with debootstrap and import it into podman as ``tag``."""
    rootfs = CACHE / f"rootfs.{os.getpid()}"
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        include = f"--include={','.join(PACKAGES)}"
        subprocess.run(
            ["debootstrap", "--variant=minbase", include, SUITE, str(rootfs), debian_mirror()],
            env=dict(env),
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=1200,
        )
        shutil.copyfile(CA_BUNDLE, rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt")
        # python:*-slim's Python is its own build under /usr/local, not Debian's, so pip installs
        # into it freely; Debian's marks its python3 as managed by apt (PEP 668). Off, as there.
        for marker in (rootfs / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        # Like the slim images: no package lists or downloaded .debs.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            subprocess.run(
                ["podman", "import", *IMPORT_CHANGES, "-", tag],
                stdin=tar.stdout,
                env=dict(env),
                stdout=subprocess.DEVNULL,
                check=True,
                timeout=600,
            )
        assert tar.returncode == 0
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def dockerfile_bases() -> List[str]:
    """Return the Dockerfile's base images (``FROM``s that are not its own stages), in full."""
    stages: List[str] = []
    bases: List[str] = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.IGNORECASE)
        if match is None:
            continue
        name, stage = match.groups()
        if name not in stages:
            first = name.split("/")[0]
            if "/" not in name:
                name = f"docker.io/library/{name}"
            elif "." not in first and ":" not in first and first != "localhost":
                name = f"docker.io/{name}"
            bases.append(name)
        if stage:
            stages.append(stage)
    return sorted(set(bases))


def stand_in_base(env: Mapping[str, str]) -> str:
    """Return the stand-in base's tag; make it first unless this week's is there."""
    tag = base_tag()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be making it right now
        exists = subprocess.run(["podman", "image", "exists", tag], env=dict(env), check=False)
        if exists.returncode != 0:
            started = time.monotonic()
            debootstrap_base(env, tag)
            print(f"stand-in base {tag} made in {time.monotonic() - started:.0f} s")
            for old in podman(env, "images", "--format", "{{.Repository}}:{{.Tag}}").split():
                if old.startswith(f"{BASE_REPO}:") and old != tag:
                    podman(env, "rmi", old)
    return tag


@pytest.fixture(scope="module")
def image(podman_env: Dict[str, str]) -> Iterator[str]:
    """Build docker/Dockerfile on the stand-in base; yield the image's tag."""
    base = stand_in_base(podman_env)
    for name in dockerfile_bases():
        podman(podman_env, "tag", base, name)
    # Build cache of the last day stays (a second run builds in seconds); older layers go.
    podman(podman_env, "image", "prune", "--force", "--filter", "until=24h")
    tag = f"{IMAGE_REPO}:test-{os.getpid()}"
    started = time.monotonic()
    podman(
        podman_env,
        "build",
        "--pull=never",  # no registry: the stand-in is the base
        "--network=host",  # pip reaches PyPI as the host does
        "--file",
        str(DOCKERFILE),
        "--tag",
        tag,
        str(ROOT),
        timeout=1200,
    )
    print(f"image {tag} built in {time.monotonic() - started:.0f} s")
    try:
        yield tag
    finally:
        podman(podman_env, "rmi", "--force", tag)


# -- compose.yaml, translated to podman run ------------------------------------------------


def compose_duration_s(text: str) -> float:
    """Return a compose duration ("30s", "1m30s") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve compose's ``${NAME:-default}`` from ``env``, as compose does from the shell."""
    pattern = r"\$\{(\w+)(?::-([^}]*))?\}"
    return re.sub(pattern, lambda match: env.get(match.group(1)) or match.group(2) or "", value)


# Keys with nothing to translate, and why.
NOT_RUN_FLAGS = {
    "build": "the image is built above from the same Dockerfile and context",
    "image": "the image built above",
    "logging": "podman's own log file stands in for Docker's json-file driver",
}


def compose_run_args(
    service: Mapping[str, Any], *, config_file: Path, volume: str, env: Mapping[str, str]
) -> List[str]:
    """Return the ``podman run`` options for a compose service; unknown keys fail the test."""
    args: List[str] = []
    for key, value in service.items():
        if key in NOT_RUN_FLAGS:
            continue
        if key == "read_only":
            # Docker's read_only mounts no tmpfs anywhere; podman's does unless told not to.
            args += ["--read-only=true", "--read-only-tmpfs=false"] if value else []
        elif key == "cap_drop":
            args += [f"--cap-drop={cap}" for cap in value]
        elif key == "security_opt":
            args += [f"--security-opt={opt}" for opt in value]
        elif key == "stop_signal":
            args.append(f"--stop-signal={value}")
        elif key == "stop_grace_period":
            args.append(f"--stop-timeout={compose_duration_s(value):g}")
        elif key == "restart":
            args.append(f"--restart={value}")
        elif key == "environment":
            args += [f"--env={name}={interpolate(text, env)}" for name, text in value.items()]
        elif key == "volumes":
            for mount in value:
                if mount["type"] == "bind":  # the user's config: ours instead
                    ro = ",ro=true" if mount.get("read_only") else ""
                    args.append(
                        f"--mount=type=bind,source={config_file},target={mount['target']}{ro}"
                    )
                else:  # the named state volume: one of this run's own
                    args.append(f"--mount=type=volume,source={volume},target={mount['target']}")
        else:
            pytest.fail(f"compose.yaml key {key!r} is not translated to podman run: add it here")
    return args


# -- the container ---------------------------------------------------------------------------


def mount_options(pid: int) -> Dict[str, List[str]]:
    """Return each mount point of process ``pid`` with its per-mount options."""
    mounts: Dict[str, List[str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    return mounts


def process_status(pid: int) -> Dict[str, List[str]]:
    """Return the fields of ``/proc/<pid>/status`` (``Uid``, ``CapBnd``, ``NoNewPrivs``...)."""
    text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return {k: v.split() for k, v in re.findall(r"^(\w+):\s*(.*)$", text, re.MULTILINE)}


def test_image_steers_and_hands_the_baseline_back_on_podman_stop(
    image: str, podman_env: Dict[str, str], mosquitto: Broker, tmp_path: Path
) -> None:
    service = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["venus-prio"]
    grace_s = compose_duration_s(service["stop_grace_period"])
    config = config_data(venus_config("mqtt", broker=mosquitto), Path("/state"))
    config_file = write_yaml(tmp_path / "config.yaml", config)
    config_file.chmod(0o644)  # the container's user is not the file's owner
    name = f"venus-prio-test-{os.getpid()}"
    volume = f"{name}-state"
    run = compose_run_args(service, config_file=config_file, volume=volume, env={})
    user = podman(podman_env, "image", "inspect", "--format", "{{.Config.User}}", image).strip()

    async def scenario() -> None:
        async with mqtt_gx(mosquitto, PLANT) as gx:
            # The host network: this broker is on the host's loopback (a real GX's is on the LAN).
            await podman_async(
                podman_env, "run", "--detach", f"--name={name}", "--network=host", *run, image
            )
            try:
                # The shipped default (actuator auto) on a GX that honours the hub4 override:
                # the container steers through the override and never writes the setting.
                await eventually(
                    lambda: (gx.override_w or -1.0) > 0,
                    timeout=60.0,
                    what="the container steering through the override",
                )
                state = json.loads(
                    await podman_async(podman_env, "inspect", "--format", "{{json .State}}", name)
                )
                pid = state["Pid"]
                uid = user.split(":")[0]
                status = process_status(pid)
                assert uid != "0" and status["Uid"] == [uid] * 4  # real, effective, saved, fs
                assert int(status["CapBnd"][0], 16) == 0  # cap_drop: ALL
                assert status["NoNewPrivs"] == ["1"]  # no-new-privileges
                mounts = mount_options(pid)
                assert "ro" in mounts["/"]
                assert "ro" in mounts["/config/config.yaml"]
                assert "rw" in mounts["/state"]

                started = asyncio.get_running_loop().time()
                await podman_async(podman_env, "stop", name, timeout=grace_s + 30)
                took = asyncio.get_running_loop().time() - started
                code = await podman_async(
                    podman_env, "inspect", "--format", "{{.State.ExitCode}}", name
                )
                assert code.strip() == "0"  # SIGTERM handled; a SIGKILL at the deadline is 137
                assert took < grace_s
                assert gx.override_w == -1.0  # released on SIGTERM
                steered = gx.written_to(paths.OVERRIDE_MAX_DISCHARGE)
                assert steered[-1] == -1 and all(0 < v <= 3000 for v in steered[:-1]), steered
                assert (gx.setting, gx.written()) == (BASELINE, [])  # the user's value untouched
                logs = await podman_async(podman_env, "logs", name)
                assert "Released the override (-1 confirmed by read-back" in logs, logs
                where = await podman_async(
                    podman_env, "volume", "inspect", "--format", "{{.Mountpoint}}", volume
                )
                journal = journal_at(Path(where.strip()))
                assert (journal.baseline_w, journal.clean, journal.override_held) == (
                    BASELINE,
                    True,
                    False,
                )
            finally:
                # Shown by pytest when the test fails: what the container said.
                with contextlib.suppress(BaseException):
                    print(await podman_async(podman_env, "logs", name))
                podman(podman_env, "rm", "--force", "--ignore", "--time=0", name)
                volumes = podman(podman_env, "volume", "ls", "--quiet").split()
                if volume in volumes:
                    podman(podman_env, "volume", "rm", "--force", volume)

    run_async(scenario(), timeout=240.0)
