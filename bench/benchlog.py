"""
A C{twistd --logger} observer factory for the benchmark: JSON log events on
standard output, so that the harness reads structured events (the
C{listening} event's port) rather than parsing text.

Usage: C{PYTHONPATH=bench twistd -n --logger=benchlog.observer netdemo ...}
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def observer() -> ILogObserver:
    """
    A JSON log observer writing to standard output.
    """
    return jsonFileLogObserver(sys.stdout)
