"""``python -m vectoros`` is the ``vectoros`` command."""

from vectoros.cli import main

main()
