"""The init's logger, configured on first use.

Importing `logging` is ~75% of the init's own import time (~0.15 s under TCG),
so it is deferred until something is actually logged; a normal boot logs
nothing before sshd and the agent are running.
"""

from __future__ import annotations

import sys

LOG_FILE = "/run/dockyard/init.log"


def _configure():
    import logging

    logger = logging.getLogger("dockyard-init")
    if not logger.handlers:
        logger.setLevel(logging.DEBUG)
        to_file: logging.Handler
        try:
            to_file = logging.FileHandler(LOG_FILE)
        except OSError:
            to_file = logging.StreamHandler(sys.stderr)
        to_file.setLevel(logging.INFO)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(to_file)
        # Problems also go to the console (the serial port is slow under TCG, so
        # routine messages only with dockyard.debug=1 on the kernel command line).
        try:
            with open("/proc/cmdline") as f:
                debug = "dockyard.debug=1" in f.read().split()
        except OSError:
            debug = False
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.DEBUG if debug else logging.WARNING)
        console.setFormatter(logging.Formatter("dockyard-init: %(levelname)s %(message)s"))
        logger.addHandler(console)
    return logger


class _LazyLogger:
    """Stands in for a logging.Logger until the first call configures the real one."""

    _logger = None

    def __getattr__(self, name: str):
        if _LazyLogger._logger is None:
            _LazyLogger._logger = _configure()
        return getattr(_LazyLogger._logger, name)


log = _LazyLogger()
