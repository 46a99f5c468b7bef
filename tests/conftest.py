"""
The reactor the tests run on: Twisted's default, or the one named by
C{NETDEMO_REACTOR} (C{make test REACTOR=netdemo}), installed here, before
any test module imports C{twisted.internet.reactor}.  The daemons the tests
start get the same C{--reactor} (L{tests.support.reactorArgs}).
"""

import os

if os.environ.get("NETDEMO_REACTOR"):
    from twisted.application.reactors import installReactor

    installReactor(os.environ["NETDEMO_REACTOR"])
