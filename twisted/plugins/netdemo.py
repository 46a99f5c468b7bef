"""
The C{twistd netdemo} dropin.

It names the module that holds the options and C{makeService} as a string,
so nothing of netdemo (and never the reactor) is imported while Twisted scans
its plugins.  Keep this file free of other imports: an error here would break
every C{twistd} command, not just C{twistd netdemo}.
"""

from twisted.application.service import ServiceMaker

netdemo = ServiceMaker(
    "netdemo",
    "netdemo.tap",
    "Classic network utility services: TCP echo, pub/sub hub, UDP echo, multicast.",
    "netdemo",
)
