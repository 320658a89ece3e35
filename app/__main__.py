"""``python -m app`` is the ``vectoros`` command."""

from app.cli import main

main()
