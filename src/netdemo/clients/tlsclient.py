# -*- test-case-name: tests.test_cli_tls -*-
"""
C{--tls [--ca FILE] [--cert FILE --key FILE]} of the stream clients
(C{netdemo ping tcp}, C{chat}, C{tail}, C{pub}): connections over TLS that
check the server's certificate and name with Twisted's
L{optionsForClientTLS}, optionally with a client certificate for a listener
that requires one (C{--tls-client-ca}).

A TLS connection counts as made once its handshake is done
(L{clientEndpoint}), so a certificate the client does not trust is the
one-line error of a connection that could not be made, not a connection
lost later.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHandshakeListener,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "TLS_FLAGS",
    "TLS_PARAMETERS",
    "TLSClientOptions",
    "TLSHandshakeFailed",
    "clientEndpoint",
    "clientTLS",
    "tlsReasons",
]

#: The flag of every stream client.
TLS_FLAGS: list[list[Any]] = [
    [
        "tls",
        None,
        "Connect over TLS, checking the server's certificate and name (with "
        "--ca, or the system's CAs)",
    ],
]

#: The files of C{--tls}.
TLS_PARAMETERS: list[list[Any]] = [
    ["ca", None, None, "With --tls: trust the CA certificates (PEM) in this file"],
    [
        "cert",
        None,
        None,
        "With --tls: present this client certificate (PEM), with --key",
    ],
    ["key", None, None, "With --tls: the client certificate's private key (PEM)"],
]


class TLSHandshakeFailed(Exception):
    """
    The TLS handshake failed; the text says why in one line.
    """


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise usage.UsageError(f"--{option} {path!r}: {e.strerror}") from None


def clientTLS(options: Any, host: str) -> Any:
    """
    The TLS settings C{options} ask for, for a server named C{host}: a
    connection creator from L{optionsForClientTLS}, or L{None} without
    C{--tls}.  Its files are read here.

    @raise usage.UsageError: Naming the option that is wrong.
    """
    from twisted.internet.ssl import (
        Certificate,
        PrivateCertificate,
        optionsForClientTLS,
        trustRootFromCertificates,
    )

    if not options["tls"]:
        for name in ("ca", "cert", "key"):
            if options[name] is not None:
                raise usage.UsageError(f"--{name} needs --tls")
        return None
    if (options["cert"] is None) != (options["key"] is None):
        raise usage.UsageError("--cert and --key go together")
    trustRoot = None
    if options["ca"] is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            found = x509.load_pem_x509_certificates(_read("ca", options["ca"]))
        except ValueError:
            raise usage.UsageError(
                f"--ca {options['ca']!r} holds no PEM certificate"
            ) from None
        trustRoot = trustRootFromCertificates(
            [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in found]
        )
    client = None
    if options["cert"] is not None:
        pem = _read("cert", options["cert"]) + b"\n" + _read("key", options["key"])
        try:
            client = PrivateCertificate.loadPEM(pem)
        except Exception:
            raise usage.UsageError(
                f"--cert {options['cert']!r} and --key {options['key']!r} are not "
                "a PEM certificate and its unencrypted key"
            ) from None
    return optionsForClientTLS(host, trustRoot, client)


class TLSClientOptions(usage.Options):
    """
    Adds C{--tls}, C{--ca}, C{--cert} and C{--key} to a client's options
    (Twisted gathers the options of every base class): put it first among
    the bases.  After parsing, L{tlsClient} is the connection creator for
    the C{host} the command line names, or L{None} without C{--tls}.
    """

    optFlags = TLS_FLAGS
    optParameters = TLS_PARAMETERS
    tlsClient: Any = None

    def parseOptions(self, options: Any = None) -> None:
        super().parseOptions(options)
        if self["tls"] and self.get("protocol", "tcp") != "tcp":
            raise usage.UsageError(f"--tls is for tcp, not {self['protocol']}")
        self.tlsClient = clientTLS(self, self["host"])


def tlsReasons(error: BaseException) -> str:
    """
    OpenSSL's reasons in an C{SSL.Error} (C{certificate verify failed}),
    or C{""} for another error.
    """
    from OpenSSL import SSL

    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        reasons = [r[-1] for r in error.args[0] if isinstance(r, tuple) and r[-1]]
        return "; ".join(dict.fromkeys(reasons))
    return ""


def _failureText(failure: Failure) -> str:
    """
    One line saying why a handshake failed.
    """
    error = failure.value or Exception()
    reasons = tlsReasons(error)
    if reasons:
        return reasons
    name = type(error).__name__
    if name == "VerificationError":
        return "the server's certificate is not for this name or address"
    text = str(error).strip().splitlines()
    return text[0] if text else name


@implementer(IHandshakeListener)
class _Handshaking(ProtocolWrapper):
    """
    Holds its protocol back until the TLS handshake is done: then the
    protocol is connected and L{handshake} fires with it; a connection
    lost before fails L{handshake} with L{TLSHandshakeFailed}.
    """

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self.handshake: Deferred[Any] = Deferred()

    def makeConnection(self, transport: Any) -> None:
        from twisted.internet.protocol import Protocol
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def handshakeCompleted(self) -> None:
        wrapped: Any = self.wrappedProtocol
        wrapped.makeConnection(self)
        self.handshake.callback(wrapped)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.handshake.called:
            super().connectionLost(reason)
            return
        self.factory.unregisterProtocol(self)
        why = _failureText(reason) if reason is not None else "connection lost"
        self.handshake.errback(TLSHandshakeFailed(f"TLS handshake failed: {why}"))


class _HandshakingFactory(WrappingFactory):
    protocol = _Handshaking


@implementer(IStreamClientEndpoint)
class _HandshakeEndpoint:
    """
    An endpoint whose C{connect} fires once the TLS handshake is done.
    """

    def __init__(self, tlsEndpoint: IStreamClientEndpoint) -> None:
        self._tls = tlsEndpoint

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        connecting: Deferred[Any] = self._tls.connect(_HandshakingFactory(factory))
        return connecting.addCallback(lambda wrapper: wrapper.handshake)


def clientEndpoint(
    reactor: Any, host: str, port: int, timeout: float, tls: Any = None
) -> IStreamClientEndpoint:
    """
    The endpoint a client connects with: TCP to C{host}, over TLS when
    C{tls} (from L{clientTLS}) is given.
    """
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls is None:
        return endpoint
    return _HandshakeEndpoint(wrapClientTLS(tls, endpoint))
