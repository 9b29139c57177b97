"""Operator scripts for docpipe (run as modules from the project directory, e.g. ``python -m scripts.deploy``)."""
