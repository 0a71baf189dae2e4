"""``python -m s2s`` is the ``s2s`` command."""

from s2s.cli import command

command()
