"""Runnable examples of logway (each a package: `python -m examples.<name>`)."""
