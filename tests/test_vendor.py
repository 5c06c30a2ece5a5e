"""Browser assets from pinned npm tarballs: a tarball whose checksum differs is refused and nothing is left
behind; a matching one installs only the listed files, and a second run does nothing."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from app import vendor


def tarball(folder: Path, files: dict[str, bytes]) -> Path:
    """An npm-style tarball (files under package/), as `npm pack` writes it."""
    path = folder / "pkg-1.0.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def packed(tmp_path, monkeypatch):
    """`npm pack` answered from a local tarball (the registry is not reachable from the tests)."""
    src = tmp_path / "src"
    src.mkdir()
    path = tarball(src, {"dist/app.js": b"console.log(1)", "LICENSE": b"MIT", "other.js": b"x"})
    calls = []

    def npm_pack(package: str, version: str, dest: Path) -> Path:
        calls.append((package, version))
        copy = dest / path.name
        copy.write_bytes(path.read_bytes())
        return copy

    monkeypatch.setattr(vendor, "_npm_pack", npm_pack)
    return hashlib.sha256(path.read_bytes()).hexdigest(), calls


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, packed):
    spec = {"version": "1.0.0", "sha256": "0" * 64, "files": ["dist/app.js", "LICENSE"]}
    with pytest.raises(vendor.VendorError, match="does not match the pinned"):
        vendor.install_package("pkg", spec, tmp_path / "vendor")
    assert not (tmp_path / "vendor" / "pkg").exists()


def test_matching_tarball_installs_listed_files_once(tmp_path, packed):
    digest, calls = packed
    spec = {"version": "1.0.0", "sha256": digest, "files": ["dist/app.js", "LICENSE"]}
    root = tmp_path / "vendor"
    assert vendor.install_package("pkg", spec, root) is True
    assert sorted(p.name for p in (root / "pkg").iterdir()) == [".installed", "LICENSE", "app.js"]
    assert vendor.installed("pkg", spec, root)
    assert vendor.install_package("pkg", spec, root) is False and len(calls) == 1
    assert not vendor.installed("pkg", {**spec, "version": "1.0.1"}, root)


def test_the_manifest_pins_every_package_by_sha256():
    for name, spec in vendor.manifest().items():
        assert len(spec["sha256"]) == 64 and spec["version"].count(".") == 2 and spec["files"], name
