"""Where the Hydra entry points (``train``, ``predict``) find the shipped ``conf/`` tree.

One constant, shared by every ``@hydra.main`` and by the Python API, so that how the configs are shipped (top-level
``conf/`` in a source checkout, inside the installed package in a wheel) is decided in one place.
"""

#: ``config_path`` of ``hydra.main``, relative to the decorated entry-point module (``mmea_lightning/*.py``).
CONFIG_PATH = "../conf"
