# Beam ships the project to remote workers with --setup_file=./setup.py; metadata is in pyproject.toml.
from setuptools import setup

setup()
