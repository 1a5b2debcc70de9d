"""The peers' reference code, for the oracle tests and the realised-rate benchmark.

torchvision's ``drop_block2d``/``drop_block3d`` and ``stochastic_depth``, and timm's
``drop_block_2d`` and ``drop_path``, are the behaviour torchdrop is checked against. Neither
package can be imported next to this project's torch (torchvision's compiled ops do not load
against it, and timm imports torchvision), so :func:`fetch` downloads their wheels with pip and
keeps only the three source files, and the loaders below import those files by path. Their code
is never copied into the project: the files live in a git-ignored folder.

Usage:
  python -m tools.peers            # or: python tools/peers.py [DEST]

The folder is ``.peers/`` at the repository root, or ``$JAXDROP_PEERS`` when set.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("timm", "torchvision")
FILES = {
    "timm": ("timm/layers/drop.py",),
    "torchvision": ("torchvision/ops/drop_block.py", "torchvision/ops/stochastic_depth.py"),
}
# The one relative import in torchvision's files: API-usage logging, replaced by a no-op.
_USAGE_LOG = re.compile(r"^from \.\.utils import _log_api_usage_once[ \t]*$", re.MULTILINE)
_NO_OP = "def _log_api_usage_once(obj):  # replaced by tools.peers\n    return None"
_RELATIVE = re.compile(r"^\s*from \.+", re.MULTILINE)


def default_dest() -> Path:
    """``$JAXDROP_PEERS`` if set, else ``.peers/`` at the repository root."""
    return Path(os.environ.get("JAXDROP_PEERS") or ROOT / ".peers")


def fetch(dest: str | Path | None = None) -> Path:
    """Downloads the timm and torchvision wheels (no dependencies) and extracts the peer files.

    Args:
      dest: the folder to write ``timm/layers/drop.py``, ``torchvision/ops/drop_block.py`` and
        ``torchvision/ops/stochastic_depth.py`` into (see :func:`default_dest`).

    Returns:
      The folder. ``VERSIONS.txt`` there names the wheels the files came from.
    """
    dest = Path(dest) if dest is not None else default_dest()
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", *PACKAGES]
        subprocess.run([*command, "-d", download], check=True)
        wheels = sorted(Path(download).glob("*.whl"))
        versions = []
        for package in PACKAGES:
            found = [w for w in wheels if w.name.split("-")[0] == package]
            if not found:
                raise RuntimeError(f"pip downloaded no wheel for {package} into {download}.")
            with zipfile.ZipFile(found[0]) as archive:
                for member in FILES[package]:
                    target = dest / member
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
            versions.append(found[0].name)
    (dest / "VERSIONS.txt").write_text("\n".join(versions) + "\n")
    return dest


def missing(dest: str | Path | None = None) -> list[str]:
    """The peer files not present in ``dest``."""
    dest = Path(dest) if dest is not None else default_dest()
    return [m for members in FILES.values() for m in members if not (dest / m).is_file()]


def versions(dest: str | Path | None = None) -> str:
    """The wheel names recorded by :func:`fetch`, or "unknown"."""
    path = (Path(dest) if dest is not None else default_dest()) / "VERSIONS.txt"
    return path.read_text().strip().replace("\n", ", ") if path.is_file() else "unknown"


def _load(member: str, dest: str | Path | None = None) -> types.ModuleType:
    path = (Path(dest) if dest is not None else default_dest()) / member
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m tools.peers` to fetch the peers' files."
        )
    source = _USAGE_LOG.sub(_NO_OP, path.read_text())
    if _RELATIVE.search(source):
        raise ImportError(f"{path} has a relative import that tools.peers does not replace.")
    name = "_peer_" + member.removesuffix(".py").replace("/", "_")
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def torchvision_drop_block(dest=None) -> types.ModuleType:
    """``torchvision/ops/drop_block.py``: ``drop_block2d``, ``drop_block3d``."""
    return _load(FILES["torchvision"][0], dest)


def torchvision_stochastic_depth(dest=None) -> types.ModuleType:
    """``torchvision/ops/stochastic_depth.py``: ``stochastic_depth``."""
    return _load(FILES["torchvision"][1], dest)


def timm_drop(dest=None) -> types.ModuleType:
    """``timm/layers/drop.py``: ``drop_block_2d``, ``drop_path``."""
    return _load(FILES["timm"][0], dest)


if __name__ == "__main__":
    print(f"Fetched the peers' files into {fetch(sys.argv[1] if len(sys.argv) > 1 else None)}")
