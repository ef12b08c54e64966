"""Packages: everything under src/ (found automatically) plus conf/ shipped as ``embedforge.conf``.

The rest of the metadata is in pyproject.toml (which maps ``embedforge.conf`` to ``conf/``).
"""

from setuptools import find_namespace_packages, find_packages, setup

conf = ["embedforge.conf", *(f"embedforge.conf.{p}" for p in find_namespace_packages("conf"))]
setup(packages=[*find_packages("src"), *conf])
