"""
The C{twistd netdemo} dropin, and the C{--reactor=netdemo} reactor.

Both name the modules they load as strings, so nothing of netdemo (and
never the reactor) is imported while Twisted scans its plugins.  Keep this
file free of other imports: an error here would break every C{twistd}
command, not just C{twistd netdemo}.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

netdemo = ServiceMaker(
    "netdemo",
    "netdemo.tap",
    "Classic network utility services: TCP echo, pub/sub hub, UDP echo, multicast.",
    "netdemo",
)

netdemoReactor = Reactor(
    "netdemo",
    "netdemo.reactor",
    "epoll(4) reactor that builds each connection's log context once (netdemo).",
)
