"""
The C{netdemo} subcommands that have grown beyond L{netdemo.cli}: the hub
clients C{chat}, C{tail} and C{pub} (L{netdemo.clients.hub}).
"""

__all__: list[str] = []
