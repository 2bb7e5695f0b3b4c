"""Build the offline Venus OS add-on bundle: one tarball a GX can install without network or pip.

How it works: the GX has Python (3.8 up to Venus v3.5x, 3.12 from v3.60) but no pip and none of our
dependencies, and everything outside ``/data`` is lost at a firmware update. So the bundle carries
the ``venus_prio`` package, a ``vendor/`` directory of pure-Python copies of the dependencies, the
``bin/venus-prio`` command (a sh wrapper that runs the package on the GX's python3 with only
``vendor/`` on the path), and what makes it a SetupHelper/PackageManager package named
``VenusPrio`` (``venus_prio.gx_package``): ``version``, ``setup``, the daemontools service in
``services/VenusPrio/`` and a default ``config.example.yaml``; ``install.sh`` / ``uninstall.sh``
do the same over SSH. The dependencies come from ``pip
download`` of ``py3-none-any`` wheels for Python 3.8 (the oldest Python a GX runs; the same wheels
serve 3.12), unzipped. PyYAML ships no pure wheel: its sdist is downloaded and only ``lib/yaml/``
is copied, which is PyYAML's own pure-Python implementation (it uses libyaml only when its C
extension is importable, and that extension is never built here). The tarball is deterministic:
sorted entries, root ownership, fixed modes, and the mtime of ``SOURCE_DATE_EPOCH`` when set, so
the same sources and dependency versions give the same bytes. Its name, ``VenusPrio-<version>
.tar.gz``, is one PackageManager takes from a USB stick.

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
from venus_prio.gx_package import (
    COMMAND,
    INSTALL_SH,
    PACKAGE_NAME,
    SERVICE_LOG_RUN,
    SERVICE_RUN,
    SETUP,
    UNINSTALL_SH,
    archive_name,
    package_version,
)

PYTHON_TARGET = "3.8"  # the oldest Python on a GX; pure wheels chosen for it also run on 3.12
# Kept in step with [project] dependencies in pyproject.toml (a unit test compares them).
WHEEL_REQUIREMENTS: Tuple[str, ...] = (
    "aiomqtt>=2.5,<3",
    "paho-mqtt>=2.0,<3",  # aiomqtt's own dependency
    "typing_extensions>=4.4",  # aiomqtt imports it on Python < 3.11 (the GX: 3.8)
    "dbus-next>=0.2.3",
)
PYYAML_REQUIREMENT = "pyyaml>=5.3"

PathLike = Union[str, "os.PathLike[str]"]


class BundleError(VenusPrioError):
    """The bundle could not be built (download failed, a dependency is not pure Python...)."""


def _minimal_config() -> str:
    """Return the default config.yaml used when the repository has none."""
    return (
        "# venus-prio on this GX. Check it with:\n"
        "#   venus-prio check-config /data/setupOptions/VenusPrio/config.yaml --probe\n"
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
    """Build ``VenusPrio-<version>.tar.gz`` in ``out_dir`` and return its path.

    The tarball holds one directory, ``VenusPrio/``: a PackageManager package, as PackageManager
    takes it from a USB stick (by that file name) or unpacks it to ``/data/VenusPrio``.
    """
    root = repo_root if repo_root is not None else Path(__file__).resolve().parent.parent
    pip_command = list(pip) if pip is not None else [sys.executable, "-m", "pip"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_text = bundle_config(root)
    version = package_version(__version__)
    with tempfile.TemporaryDirectory(prefix="venus-prio-bundle-") as tmp:
        tree = Path(tmp) / PACKAGE_NAME
        tree.mkdir()
        _copy_package(tree)
        download_vendor(tree / "vendor", work=Path(tmp) / "download", pip=pip_command)
        _write(tree / "version", f"{version}\n")
        _write(tree / "config.example.yaml", config_text)
        _write(tree / "setup", SETUP, executable=True)
        _write(tree / "install.sh", INSTALL_SH, executable=True)
        _write(tree / "uninstall.sh", UNINSTALL_SH, executable=True)
        _write(tree / "bin" / "venus-prio", COMMAND, executable=True)
        service = tree / "services" / PACKAGE_NAME
        _write(service / "run", SERVICE_RUN, executable=True)
        _write(service / "log" / "run", SERVICE_LOG_RUN, executable=True)
        tarball = out / archive_name(__version__)
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
