"""A real install: the wheel alone, in a fresh venv, works from any folder.

The wheel is built from a copy of what setup.py packages (so nothing is written into the
repo) and installed with --no-deps into a new venv; the heavy dependencies (torch, TVM)
come from this interpreter's site-packages through a .pth file, so the test takes
seconds, but `pipeline` itself can only come from the wheel (a .pth line adds a folder
to sys.path without running the .pth files in it, so this environment's editable
install of the checkout stays out). HOME is a temporary folder and no PIPELINE_*
variable is set: the defaults of an installed package are what is checked.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pipeline.paths import REPO_ROOT
from pipeline.space import resolve_arch

PACKAGED = ("setup.py", "pipeline", "device_profiles", "kernels")
PROBE = """
import json, pipeline
from pipeline.paths import CHECKOUT, cache_dir, kernels_dir
from pipeline.kernels.database import device_kernel_dir, has_database
from pipeline.model import load_supernet
from pipeline.compile.manifest import SCHEMA_PATH
from pipeline.space import SearchSpace
from pipeline.train import demo_supernet
print(json.dumps({"package": pipeline.__file__, "checkout": CHECKOUT, "cache": str(cache_dir()),
                  "kernels": str(kernels_dir()), "x86_db": has_database("x86-host"),
                  "x86_db_dir": str(device_kernel_dir("x86-host")), "schema": SCHEMA_PATH.is_file(),
                  "demo": str(demo_supernet()), "demo_space": load_supernet(demo_supernet()).space.name,
                  "spaces": [SearchSpace.load(n).name for n in ("attentivenas", "demo")]}))
"""


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in PACKAGED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(src)], check=True, cwd=root)
    (wheel,) = (root / "dist").glob("pipeline-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_heavy_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True)
    home, elsewhere = root / "home", root / "elsewhere"
    elsewhere.mkdir()
    user_profiles = home / ".config/pipeline/device_profiles"
    user_profiles.mkdir(parents=True)
    board = (REPO_ROOT / "device_profiles/rpi4.yaml").read_text().replace("name: rpi4", "name: my-board")
    (user_profiles / "my-board.yaml").write_text(board)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIPELINE_", "XDG_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(home)
    before = _files(site / "pipeline")

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    info = json.loads(run(str(venv / "bin/pipeline"), "info", "a0", "--json"))
    devices = json.loads(run(str(venv / "bin/pipeline"), "device", "list", "--json"))
    probe = json.loads(run(str(venv / "bin/python"), "-c", PROBE))
    return {"site": site, "home": home, "info": info, "devices": devices, "probe": probe,
            "written": _files(site / "pipeline") - before}


def test_commands_run_from_another_folder(installed):
    a0 = resolve_arch("a0")
    assert installed["info"]["id"] == a0.id and installed["info"]["mflops"] == pytest.approx(203.39, abs=0.01)
    names = {d["name"] for d in installed["devices"]}
    assert {"x86-host", "arm64-emulated", "rpi4", "rpi5", "android-arm64"} <= names  # built-in
    assert "my-board" in names  # the user's profile folder


def test_package_and_its_data_come_from_the_wheel(installed):
    probe, site = installed["probe"], installed["site"]
    assert Path(probe["package"]).is_relative_to(site) and probe["checkout"] is False
    assert probe["x86_db"] and Path(probe["x86_db_dir"]).is_relative_to(site / "pipeline/data/kernels")
    assert probe["schema"] and probe["spaces"] == ["attentivenas", "demo"]
    assert Path(probe["demo"]).is_relative_to(site) and probe["demo_space"] == "demo"


def test_generated_state_goes_to_user_folders_not_site_packages(installed):
    probe, home = installed["probe"], installed["home"]
    assert probe["cache"] == str(home / ".cache/pipeline")
    assert probe["kernels"] == str(home / ".local/share/pipeline/kernels")
    assert not installed["written"]
