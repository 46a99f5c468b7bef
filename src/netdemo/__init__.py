"""
netdemo: the classic network utility services in one small C{twistd} daemon.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("netdemo")
except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    __version__ = "0+unknown"
