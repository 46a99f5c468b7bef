"""
The seed tutorials' own programs (C{../shared/seeds/}, C{docs/seeds.md}),
ported to Python 3 with their logic unchanged, run as subprocesses against a
real C{twistd netdemo}.

Each C{seedNNN_*.py} here is one program of a tutorial.  What was changed,
and only because it could not run as written, is listed at its top: C{str}
and C{bytes}, the tutorials' typos (C{listenMulitcast}, C{lostConnection}),
the 5-second (and 30-second) sleeps shortened, and where the daemon listens
(a port from the command line, because a test never takes a fixed port on
the host).  The C{test_seedNNN.py} modules run them.
"""
