"""The package's version and archive name in PackageManager's forms (SetupHelper v9.4)."""

from __future__ import annotations

import pytest

from venus_prio.errors import VenusPrioError
from venus_prio.gx_package import PACKAGE_NAME, archive_name, package_version


@pytest.mark.parametrize(
    ("pep440", "expected"),
    [
        ("0.1.0", "v0.1.0"),
        ("1.2", "v1.2"),
        ("1.2.3a4", "v1.2.3a4"),
        ("1.2.3b4", "v1.2.3b4"),
        ("1.2.3rc4", "v1.2.3b4"),  # PackageManager has no release candidate: its beta
        ("1.2.3.dev5", "v1.2.3d5"),
    ],
)
def test_versions_take_packagemanagers_form(pep440: str, expected: str) -> None:
    assert package_version(pep440) == expected


@pytest.mark.parametrize("bad", ["", "v1.2", "1.2+local", "1.2.post1", "one"])
def test_a_version_without_a_packagemanager_form_is_refused(bad: str) -> None:
    with pytest.raises(VenusPrioError, match="PackageManager form"):
        package_version(bad)


def test_the_archive_name_gives_the_package_name_and_a_version_mark() -> None:
    name = archive_name("0.1.0")
    assert name.split("-", 1)[0] == PACKAGE_NAME  # how PackageManager names a USB archive
    assert "-0" in name and name.endswith(".tar.gz")
