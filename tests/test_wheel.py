"""A built wheel is a real package: it ships the configs, and a non-editable install trains the toy pair from any
directory -- with the wheel's own files, not the checkout's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["model.max_epochs=2", "threads=1", "logger=none", "trainer.enable_progress_bar=false"]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a clean clone of the repository (its committed files only)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to clone from")
    tmp = tmp_path_factory.mktemp("wheel")
    _run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(tmp / "clone")])
    # --no-build-isolation: build with this environment's setuptools, no download
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps", "-w",
          str(tmp / "dist"), str(tmp / "clone")])
    (built,) = (tmp / "dist").glob("mmea_lightning-*.whl")
    return built


def test_wheel_ships_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("mmea_lightning/conf/") for n in names if n.startswith("mmea_lightning/conf/")}
    committed = _run(["git", "ls-files", "conf"], cwd=ROOT).stdout.split()
    expected = {name.removeprefix("conf/") for name in committed if name.endswith(".yaml")}
    assert expected and expected <= shipped
    assert not any(n.startswith(("conf/", "tests/")) for n in names)  # no top-level package named conf or tests


def test_installed_wheel_trains_the_toy_pair_from_any_directory(wheel, tmp_path, cache_dir):
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)])
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the install
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "MMEA_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline"}
    where = _run([sys.executable, "-c", "import mmea_lightning, mmea_lightning.config_source as c; "
                  "print(mmea_lightning.__file__); print(c.CONFIG_PATH)"], cwd=elsewhere, env=env).stdout.split()
    assert where == [str(site / "mmea_lightning" / "__init__.py"), str(site / "mmea_lightning" / "conf")]

    _run([sys.executable, "-m", "mmea_lightning.train", *TRAIN, f"hydra.run.dir={tmp_path / 'run'}"],
         cwd=elsewhere, env=env)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["run"]["dataset"] == "toy" and summary["run"]["perf"]["epochs_run"] == 2
    assert 0 <= summary["test/hits@1"] <= 1
    hydra = (tmp_path / "run" / ".hydra" / "hydra.yaml").read_text()
    assert f"path: {site / 'mmea_lightning' / 'conf'}" in hydra and str(ROOT / "conf") not in hydra
    assert not (elsewhere / "outputs").exists()


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_the_toy_pair(wheel, tmp_path, cache_dir):
    """A fresh virtual environment, the wheel and its dependencies at the pinned versions (downloads them)."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel), "-c", str(ROOT / "constraints.txt")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MMEA_CACHE_DIR=str(cache_dir), WANDB_MODE="offline")
    _run([str(python), "-m", "mmea_lightning.train", *TRAIN, f"hydra.run.dir={tmp_path / 'run'}"],
         cwd=elsewhere, env=env)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["run"]["perf"]["epochs_run"] == 2 and 0 <= summary["test/hits@1"] <= 1
