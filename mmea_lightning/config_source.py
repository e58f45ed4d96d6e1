"""Where the Hydra entry points (``train``, ``predict``) and the Python API find the shipped ``conf/`` tree.

One place decides it, for both ways the package is installed:

* a source checkout (``pip install -e .``): the repository's top-level ``conf/``, next to ``mmea_lightning/``;
* a built wheel (``pip install mmea_lightning-*.whl``): ``mmea_lightning/conf/`` inside the installed package --
  ``setup.py`` maps the top-level ``conf/`` to the package ``mmea_lightning.conf`` when the wheel is built.

The package's own copy wins when both exist. Nothing here imports Hydra: ``import mmea_lightning`` stays light.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

#: candidate locations, in order: inside the installed package (wheel), then the checkout's top level
CONFIG_DIRS: tuple[Path, ...] = (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf")

#: the config tree in use: the first candidate that holds ``train.yaml`` (else the checkout's, for Hydra's error)
CONFIG_DIR: Path = next((d for d in CONFIG_DIRS if (d / "train.yaml").is_file()), CONFIG_DIRS[-1])

#: ``config_path`` of every ``hydra.main`` (an absolute path: Hydra uses it as is, whatever the working directory)
CONFIG_PATH: str = str(CONFIG_DIR)
