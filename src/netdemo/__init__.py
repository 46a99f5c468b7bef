"""
netdemo: the classic network utility services in one small C{twistd} daemon.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__", "versionLine"]

try:
    __version__ = version("netdemo")
except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    __version__ = "0+unknown"


def versionLine() -> str:
    """
    What C{--version} prints: netdemo's version, then Twisted's and Python's,
    on one line (as C{nats-server --version} and C{redis-server -v} do).
    """
    import platform

    from twisted.copyright import version as twisted

    return (
        f"netdemo {__version__} (Twisted {twisted}, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )
