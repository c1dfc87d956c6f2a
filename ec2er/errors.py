"""User-facing errors: one clear line naming the file, line or field; the CLI exits non-zero."""

from __future__ import annotations


class Ec2erError(Exception):
    """An error caused by the user's input or environment (bad file, bad key, missing model).

    The CLI prints ``str(error)`` as one line, without a traceback unless ``--debug``.
    """


class ConfigError(Ec2erError):
    """A recipe (YAML) that does not validate: names the file and the key."""


class DataError(Ec2erError):
    """A data file that does not parse or validate: names the file, line and field."""


class Terminated(KeyboardInterrupt):
    """This process was sent SIGTERM (``ec2er.sigterm``): it unwinds as after Ctrl-C, closing
    what it opened, and the CLI exits 143."""
