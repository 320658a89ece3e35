"""The app layer: the ``vectoros`` command line, ``vectoros run`` (every service in one process)
and ``vectoros demo``. It wires the services together and is the only package that imports
them all; nothing imports it."""
