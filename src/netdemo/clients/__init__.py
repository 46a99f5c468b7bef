"""
The C{netdemo} subcommands, one module each, dispatched by L{netdemo.cli}:
C{ping}, C{chat}, C{tail}, C{pub} (sharing L{netdemo.clients.hubclient}) and
C{mcast}; L{netdemo.clients.common} holds what they all share.
"""

__all__: list[str] = []
