"""
netdemo: the classic network utility services in one small C{twistd} daemon.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
