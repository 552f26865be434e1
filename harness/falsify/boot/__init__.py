"""Holds ``sitecustomize.py``: ``harness.falsify.patching.patch_environment`` puts this
folder first on ``PYTHONPATH`` so a mutant reaches every Python process of the system
under test."""
