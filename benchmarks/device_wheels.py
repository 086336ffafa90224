"""The wheels the GPU run needs beyond what the GPU machine has, and a check that they suffice.

    python benchmarks/device_wheels.py download device-wheels      # make device-wheels
    python benchmarks/device_wheels.py check -- --smoke --out s.json

The GPU machine runs Python 3.12 with ``PREINSTALLED`` (and what they depend
on) and can fetch nothing: what else ``benchmarks/gpu.py`` imports travels in
a folder of at most 64 MiB. ``download`` puts there, for CPython 3.12 on
manylinux x86_64, the wheels of ``NEEDED`` and of everything they require
that the preinstalled packages do not bring (the versions installed here,
which the tests ran), builds the one that PyPI has as a source archive only
(antlr4-python3-runtime, pure Python), and writes ``requirements.txt``: the
names, unpinned, so that pip keeps a preinstalled version that fits. On the
GPU machine (docs/benchmarks.md):

    pip install --no-index --find-links device-wheels -r device-wheels/requirements.txt
    PYTHONPATH=$PWD python benchmarks/gpu.py --out gpu.json

``check`` runs ``gpu.py`` here as the GPU machine would: an import of any
installed package outside the preinstalled ones, ``NEEDED`` and their
requirements fails as if it were not installed (loader workers, forked,
inherit the block), so a missing wheel shows here first
(``tests/test_gpu_benchmark.py`` runs the smoke run this way).
"""

from __future__ import annotations

import importlib.abc
import re
import runpy
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version
from pathlib import Path

#: On the GPU machine already (docs: the device), with their own requirements.
PREINSTALLED = [
    "torch", "torchvision", "transformers", "accelerate", "pyarrow", "numpy", "pandas",
    "sentence-transformers",
]  # fmt: skip
#: What ``img_search`` imports on the benchmark's path beyond those: Hydra (the pipeline's
#: config), open_clip (the ViT-B/32 model), rich (the console), braceexpand (tar URLs).
NEEDED = ["hydra-core", "omegaconf", "open_clip_torch", "rich", "braceexpand"]
#: Published as a source archive only; pure Python, so a wheel built here installs anywhere.
SOURCE_ONLY = {"antlr4-python3-runtime"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> dict[str, str]:
    """Installed distributions ``names`` need (unconditional requirements), name → version."""
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if canonical(name) in found:
            continue
        try:
            found[canonical(name)] = version(name)
        except PackageNotFoundError:
            continue
        for text in requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def wheels_needed() -> dict[str, str]:
    """``NEEDED`` and their requirements, less what the preinstalled packages bring; ``rich``'s
    family stays in (img_search imports it directly; here it only comes through the Hub client)."""
    preinstalled = closure(PREINSTALLED)
    direct = {canonical(n) for n in NEEDED} | set(closure(["rich"]))
    return {n: v for n, v in closure(NEEDED).items() if n not in preinstalled or n in direct}


def download(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = wheels_needed()
    binary = [f"{n}=={v}" for n, v in sorted(wanted.items()) if n not in SOURCE_ONLY]
    platforms = [f"--platform={p}" for p in PLATFORMS]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version=3.12",
         "--implementation=cp", "--abi=cp312", *platforms, f"--dest={folder}", *binary],
        check=True,
    )  # fmt: skip
    built = [f"{n}=={v}" for n, v in sorted(wanted.items()) if n in SOURCE_ONLY]
    if built:
        subprocess.run([*pip, "wheel", "--no-deps", f"--wheel-dir={folder}", *built], check=True)
    (folder / "requirements.txt").write_text("".join(f"{n}\n" for n in sorted(wanted)))
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"{len(wanted)} wheels in {folder}: {size / 2**20:.1f} MiB (the limit is 64 MiB)")


class Absent(importlib.abc.MetaPathFinder):
    """Imports of installed packages the GPU machine would not have fail as if absent."""

    def __init__(self, allowed: set[str]) -> None:
        owners = packages_distributions()
        self.blocked = {
            module
            for module, names in owners.items()
            if not any(canonical(name) in allowed for name in names)
        }

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not on the GPU machine)")
        return None


def check(arguments: list[str]) -> None:
    allowed = set(closure(PREINSTALLED)) | set(wheels_needed()) | {"img-search"}  # (the repo)
    sys.meta_path.insert(0, Absent(allowed))
    script = Path(__file__).with_name("gpu.py")
    sys.argv = [str(script), *arguments]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "download":
        folder = Path(sys.argv[2])
        shutil.rmtree(folder, ignore_errors=True)
        download(folder)
    elif len(sys.argv) >= 2 and sys.argv[1] == "check":
        check([a for a in sys.argv[2:] if a != "--"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
