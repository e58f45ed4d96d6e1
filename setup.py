"""What ``pyproject.toml`` cannot say: the top-level ``conf/`` tree ships inside the package (``mmea_lightning/conf``).

pyproject's package discovery only finds packages under their own folder; the configs stay at the repository's top
level (the layout users expect) and are mapped into the package here, every ``*.yaml`` of every config group
included (:mod:`mmea_lightning.config_source` finds them in both layouts).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["mmea_lightning", "mmea_lightning.*"]), "mmea_lightning.conf"],
    package_dir={"mmea_lightning.conf": "conf"},
    package_data={"mmea_lightning.conf": ["**/*.yaml"]},
)
