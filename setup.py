"""Package discovery for the three source folders, which install under one name: ``curate/`` as
``curate``, ``paradigms/`` as ``curate.paradigms`` and ``recipes/`` as ``curate.recipes``
(pyproject.toml's package-dir). Every folder with an ``__init__.py`` is a package; none is listed by hand."""

from setuptools import find_packages, setup

ROOTS = {"curate": "curate", "paradigms": "curate.paradigms", "recipes": "curate.recipes"}

packages = []
for folder, name in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages)
