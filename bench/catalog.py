"""
Every server the benchmark measures, by name, as a L{launch.ServerSpec}.

  - netdemo itself: the real daemon, C{twistd -n --pidfile= netdemo ...},
    logging JSON lines (C{--logger=netdemo.logs.jsonObserver}), its port
    learnt from its C{listening} event;
  - the reference servers we wrote, each a file of C{bench/servers/} that
    binds port 0 and prints C{{"port": N}}: the Twisted tutorial echo (TCP
    and UDP), the asyncio and uvloop echo (TCP and UDP), the tutorial chat;
  - C{udpload server}, the C C{recvmmsg}/C{sendmmsg} UDP echo;
  - the installed C{nats-server} and C{redis-server}.

A name that cannot run here raises L{launch.Unavailable} with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.launch import (
    ServerSpec,
    Unavailable,
    announcedPort,
    listeningEvent,
    printedPort,
    readyOn,
)

BENCH = Path(__file__).resolve().parent
SERVERS = BENCH / "servers"
BUILD = BENCH / "build"

#: The name of netdemo run on its own reactor (C{twistd --reactor=netdemo},
#: L{netdemo.reactor}); C{netdemo} runs on Twisted's default reactor.
NETDEMO_REACTOR = "netdemo-reactor"

#: netdemo's TCP echo as C{make bench} measures it: every protection at
#: its default, the backlog a bare port gets.
TCP_ECHO = ["--tcp", "tcp:0:interface=127.0.0.1:backlog=1024"]

#: netdemo's UDP echo with every protection on: bound to the wildcard (so
#: every datagram is read and answered with its packet information), the
#: per-network rate and burst and the service's reply budget raised so that
#: the run measures the checks, not refusals.
UDP_ECHO = [
    "--udp", "0.0.0.0:0",
    "--udp-rate", "100000000", "--udp-burst", "100000000",
    "--udp-max-reply-rate", "100000000", "--udp-max-reply-bytes", "100GB/s",
]  # fmt: skip

#: netdemo's hub for fan-out: plain lines to the default topic, no presence
#: notices, no connection caps (1000 subscribers from one address).
HUB = [
    "--pubsub", "tcp:0:interface=127.0.0.1:backlog=4096",
    "--no-presence", "--max-per-peer", "0", "--max-connections", "0",
]  # fmt: skip


def twistd() -> list[str]:
    """
    The C{twistd} of the running interpreter's environment.
    """
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "twisted.scripts.twistd"]


def netdemo(
    name: str,
    service: str,
    options: Sequence[str],
    *alsoLogged: str,
    reactor: str | None = None,
) -> ServerSpec:
    """
    C{twistd -n --pidfile= netdemo OPTIONS}, its port that of the
    C{listening} event of C{service}, once the events C{alsoLogged} were
    logged too; on Twisted's default reactor, or on C{--reactor=REACTOR}.
    """
    argv = [
        *twistd(),
        "-n",
        "--pidfile=",
        *([f"--reactor={reactor}"] if reactor else []),
        "--logger=netdemo.logs.jsonObserver",
        "netdemo",
        *options,
    ]
    return ServerSpec(name, lambda port: argv, listeningEvent(service, *alsoLogged))


def ours(name: str, script: str, *options: str) -> ServerSpec:
    """
    A reference server of C{bench/servers/}.
    """
    argv = [sys.executable, str(SERVERS / script), *options]
    return ServerSpec(name, lambda port: argv, announcedPort)


def asyncioEcho(name: str, *options: str) -> ServerSpec:
    """
    The asyncio echo, on uvloop when C{name} is C{uvloop}.
    """
    if name == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            raise Unavailable(
                "uvloop is not installed (pip install -e '.[bench]'): skipped"
            )
        options = (*options, "--uvloop")
    return ours(name, "asyncio_echo.py", *options)


def tcpEcho(name: str, netdemoOptions: Sequence[str] = TCP_ECHO) -> ServerSpec:
    """
    A TCP echo server: C{netdemo} (on Twisted's default reactor),
    C{netdemo-reactor} (on C{--reactor=netdemo}), C{tutorial}, C{asyncio},
    C{uvloop} or C{c} (C{bench/tcpecho.c}: the same system calls per round
    trip as netdemo's echo, without the interpreter).
    """
    if name == "netdemo":
        return netdemo(name, "tcp-echo", netdemoOptions)
    if name == NETDEMO_REACTOR:
        return netdemo(name, "tcp-echo", netdemoOptions, reactor="netdemo")
    if name == "tutorial":
        return ours(name, "tutorial_echo.py")
    if name in ("asyncio", "uvloop"):
        return asyncioEcho(name)
    if name == "c":
        argv = [str(BUILD / "tcpecho"), "127.0.0.1", "0"]
        return ServerSpec(name, lambda port: argv, announcedPort)
    raise Unavailable(f"unknown TCP echo server {name!r}: skipped")


def udpEcho(name: str) -> ServerSpec:
    """
    A UDP echo server: C{netdemo}, C{netdemo-reactor} (on
    C{--reactor=netdemo}), C{tutorial}, C{asyncio}, C{uvloop} or C{c}.
    """
    if name == "netdemo":
        return netdemo(name, "udp-echo", UDP_ECHO)
    if name == NETDEMO_REACTOR:
        return netdemo(name, "udp-echo", UDP_ECHO, reactor="netdemo")
    if name == "tutorial":
        return ours(name, "tutorial_echo.py", "--udp")
    if name in ("asyncio", "uvloop"):
        return asyncioEcho(name, "--udp")
    if name == "c":
        argv = [str(BUILD / "udpload"), "server", "127.0.0.1", "0"]
        return ServerSpec(name, lambda port: argv, announcedPort)
    raise Unavailable(f"unknown UDP echo server {name!r}: skipped")


def installed(program: str) -> str:
    """
    The path of C{program} (also looked for in C{/usr/sbin}).
    """
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin")
    if found is None:
        raise Unavailable(f"{program}: not installed, skipped")
    return found


def redis(name: str = "redis") -> ServerSpec:
    """
    C{redis-server} (single-threaded), no persistence, on a port it is
    given: its output says whether it could bind it.
    """
    exe = installed("redis-server")
    return ServerSpec(
        name,
        lambda port: [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            "10000",
        ],  # fmt: skip
        readyOn(r"Ready to accept connections"),
        inUse=r"Address already in use",
    )


#: netdemo's broadcast relay: no connection caps (every receiver comes from
#: one address), otherwise the defaults (1 MiB max-pending, disconnect).
BROADCAST = [
    "--broadcast", "tcp:0:interface=127.0.0.1:backlog=4096",
    "--max-per-peer", "0", "--max-connections", "0",
]  # fmt: skip


def broadcast(name: str) -> ServerSpec:
    """
    A byte relay: C{broadcast} (netdemo), C{ncat} (C{ncat --broker}) or
    C{spreader} (the seed tutorial's server).
    """
    if name == "broadcast":
        return netdemo(name, "broadcast", BROADCAST)
    if name == "spreader":
        return ours(name, "tutorial_spreader.py")
    if name == "ncat":
        # ncat cannot choose its own port: it is given random ones until
        # one is free.
        argv = [installed("ncat"), "-v", "--broker", "--max-conns", "10000"]
        listening = readyOn(r"Listening on 127\.0\.0\.1")
        return ServerSpec(
            name,
            lambda port: [*argv, "-l", "127.0.0.1", str(port)],
            listening,
            inUse=r"Address already in use",
        )
    raise Unavailable(f"unknown broadcast server {name!r}: skipped")


#: The accounts file of C{hub-auth}: clients that have not logged in may
#: publish and subscribe everywhere but under C{secret.}, so every publish
#: and every subscription is checked against rules (issue 14: routing with
#: permissions costs at most 10% of the deliveries).
HUB_ACCOUNTS = """
[users.admin]
token = "bench-token-0123456789"
publish = { allow = [">"] }
subscribe = { allow = [">"] }

[anonymous]
publish = { allow = [">"], deny = ["secret.>"] }
subscribe = { allow = [">"], deny = ["secret.>"] }
"""


def hubAccounts() -> str:
    """
    The path of a file holding L{HUB_ACCOUNTS} (made once per run).
    """
    import tempfile

    directory = tempfile.mkdtemp(prefix="netdemo-bench-auth-")
    path = Path(directory) / "accounts.toml"
    path.write_text(HUB_ACCOUNTS)
    return str(path)


def pubsub(name: str) -> ServerSpec:
    """
    A fan-out server: C{hub} (netdemo), C{hub-auth} (netdemo with
    C{--hub-auth}, L{HUB_ACCOUNTS}), C{tutorial} (the tutorial chat),
    C{nats} (C{nats-server} on one core) or C{redis}.
    """
    if name == "hub":
        return netdemo(name, "pubsub", HUB)
    if name == "hub-auth":
        return netdemo(name, "pubsub", [*HUB, "--hub-auth", hubAccounts()])
    if name == "tutorial":
        return ours(name, "tutorial_chat.py")
    if name == "nats":
        exe = installed("nats-server")
        return ServerSpec(
            name,
            lambda port: [exe, "-a", "127.0.0.1", "-p", "-1"],
            printedPort(r"Listening for client connections on [\d.]+:(\d+)"),
            env={"GOMAXPROCS": "1"},
        )
    if name == "redis":
        return redis(name)
    raise Unavailable(f"unknown fan-out server {name!r}: skipped")
