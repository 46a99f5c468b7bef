# -*- test-case-name: tests.test_tls -*-
"""
TLS listeners: C{ssl:} endpoint descriptions read by netdemo itself, so
that they can also require client certificates and re-read their files.

netdemo parses every C{ssl:} description of a stream service here instead
of handing it to Twisted's parser: the fields are Twisted's (C{PORT},
C{privateKey}, C{certKey}, C{extraCertChain}, C{dhParameters},
C{interface}, C{backlog}), plus one of netdemo's own, C{clientCA=FILE}:
require a client certificate signed by a CA in FILE (C{--tls-client-ca}
adds it to every C{ssl:} listener that does not name one).  The listener
is Twisted's L{SSL4ServerEndpoint}; its connections are made by a
L{ReloadingServerTLS}, whose certificates and keys are read again on
L{ReloadingServerTLS.reload} (C{SIGHUP}) for new connections, keeping the
ones it has when the new files are broken.

L{peerSubject} is the verified client certificate's subject (C{CN=alice}),
for the hub to map a certificate to a user.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "TLSFileError",
    "ReloadingServerTLS",
    "TLSListener",
    "describeTLS",
    "isTLSDescription",
    "loadCertificates",
    "parseTLSDescription",
    "peerSubject",
    "readCertificates",
    "withClientCA",
]

_log = Logger()

#: The fields of an C{ssl:} description netdemo accepts (Twisted's, without
#: C{sslmethod}, plus C{clientCA}).
_FIELDS = (
    "privateKey",
    "certKey",
    "extraCertChain",
    "dhParameters",
    "interface",
    "backlog",
    "clientCA",
)

#: Twisted's backlog for C{ssl:} descriptions.
_SSL_BACKLOG = 50


class TLSFileError(ValueError):
    """
    A certificate, key or CA file that cannot be read or used; its text is
    one line naming the file.
    """


def isTLSDescription(description: str) -> bool:
    """
    Whether C{description} is an C{ssl:} server endpoint description.
    """
    return description.split(":", 1)[0].strip().lower() == "ssl"


def _fields(description: str) -> list[tuple[str | None, str]]:
    """
    The C{:}-separated fields of an endpoint description, as Twisted reads
    them: a backslash escapes the next character, and a field with an
    unescaped C{=} is C{(key, value)}, any other C{(None, value)}.
    """
    fields: list[tuple[str | None, str]] = []
    key: str | None = None
    current: list[str] = []
    characters = iter(description)
    for c in characters:
        if c == "\\":
            current.append(next(characters, ""))
        elif c == ":":
            fields.append((key, "".join(current)))
            key, current = None, []
        elif c == "=" and key is None:
            key, current = "".join(current), []
        else:
            current.append(c)
    fields.append((key, "".join(current)))
    return fields


def _escaped(value: str) -> str:
    """
    C{value} as a field of a description.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


@frozen
class TLSListener:
    """
    A parsed C{ssl:} description.

    @ivar certKey: The certificate file (PEM); the key file when not given.
    @ivar clientCA: The CAs (PEM) whose client certificates are required,
        or L{None} for no client certificates.
    """

    port: int
    privateKey: str = "server.pem"
    certKey: str | None = None
    extraCertChain: str | None = None
    dhParameters: str | None = None
    interface: str = ""
    backlog: int = _SSL_BACKLOG
    clientCA: str | None = None

    def endpoint(
        self, reactor: Any, contextFactory: ReloadingServerTLS
    ) -> IStreamServerEndpoint:
        """
        The listening endpoint, making its connections with
        C{contextFactory}.
        """
        from twisted.internet.endpoints import SSL4ServerEndpoint

        return SSL4ServerEndpoint(
            reactor, self.port, contextFactory, self.backlog, self.interface
        )


def parseTLSDescription(description: str) -> TLSListener:
    """
    Parse an C{ssl:} description (L{isTLSDescription}).

    @raise ValueError: Saying what is wrong, in one line.
    """
    fields = _fields(description)[1:]
    positional = [value for key, value in fields if key is None]
    named = {key: value for key, value in fields if key is not None}
    if len(positional) != 1:
        raise ValueError("an ssl: description has one port: ssl:PORT:privateKey=FILE")
    for key in named:
        if key not in _FIELDS:
            raise ValueError(f"ssl: has no field {key!r} (it has {', '.join(_FIELDS)})")
    try:
        port = int(positional[0])
        backlog = int(named.pop("backlog", _SSL_BACKLOG))
    except ValueError:
        raise ValueError("port and backlog must be whole numbers") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not between 0 and 65535")
    return TLSListener(port, backlog=backlog, **named)


def withClientCA(description: str, clientCA: str) -> str:
    """
    C{description} with C{clientCA=clientCA}, unless it names one.
    """
    if parseTLSDescription(description).clientCA is not None:
        return description
    return f"{description}:clientCA={_escaped(clientCA)}"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSFileError(f"cannot read {what} {path!r}: {e.strerror}") from None


def readCertificates(path: str, what: str) -> list[Any]:
    """
    Every certificate in a PEM file, as pyOpenSSL's C{X509}.
    """
    from cryptography import x509
    from OpenSSL.crypto import X509

    try:
        found = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError:
        raise TLSFileError(f"{what} {path!r} holds no PEM certificate") from None
    return [X509.from_cryptography(c) for c in found]


def loadCertificates(listener: TLSListener) -> Any:
    """
    Read the files of C{listener} into Twisted's C{CertificateOptions},
    whose context is built at once, so that a key that does not match its
    certificate is found here.

    @raise TLSFileError: Naming the file that cannot be used.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL.crypto import PKey
    from twisted.internet.ssl import CertificateOptions, DiffieHellmanParameters
    from twisted.python.filepath import FilePath

    certPath = listener.certKey or listener.privateKey
    keyPEM = _read(listener.privateKey, "privateKey")
    try:
        key = load_pem_private_key(keyPEM, None)
    except (ValueError, TypeError):
        raise TLSFileError(
            f"privateKey {listener.privateKey!r} holds no unencrypted PEM private key"
        ) from None
    certificate = readCertificates(certPath, "certKey")[0]
    options: dict[str, Any] = {}
    if listener.extraCertChain is not None:
        options["extraCertChain"] = readCertificates(
            listener.extraCertChain, "extraCertChain"
        )
    if listener.dhParameters is not None:
        _read(listener.dhParameters, "dhParameters")
        options["dhParameters"] = DiffieHellmanParameters.fromFile(
            FilePath(listener.dhParameters)
        )
    if listener.clientCA is not None:
        options.update(
            verify=True,
            caCerts=readCertificates(listener.clientCA, "clientCA"),
            requireCertificate=True,
        )
    certificateOptions = CertificateOptions(
        privateKey=PKey.from_cryptography_key(key),  # type: ignore[arg-type]
        certificate=certificate,
        **options,
    )
    try:
        context = certificateOptions.getContext()
    except SSL.Error as e:
        reasons = [r[-1] for r in e.args[0] if r[-1]] if e.args else []
        if any("mismatch" in reason for reason in reasons):
            raise TLSFileError(
                f"privateKey {listener.privateKey!r} does not match certKey "
                f"{certPath!r}"
            ) from None
        raise TLSFileError(
            f"cannot use {certPath!r} and the files with it: "
            + ("; ".join(reasons) or "OpenSSL refused them")
        ) from None
    # CertificateOptions caches this context: the callback stays.
    context.set_alpn_select_callback(_alpnSelect)
    return certificateOptions


def _alpnSelect(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    Choose the ALPN protocol of a connection: the first the factory
    negotiates (L{IProtocolNegotiationFactory}) that the client offers, or
    none, so that the handshake goes on without one.

    Twisted's own callback answers C{b""} when nothing matches, which
    OpenSSL takes as an error: every client that offers ALPN (C{curl}
    offers C{h2} and C{http/1.1}) would be refused by a factory that
    negotiates nothing, which is all of netdemo's.
    """
    from twisted.internet.interfaces import IProtocolNegotiationFactory

    tlsProtocol = connection.get_app_data()
    wrapped = getattr(getattr(tlsProtocol, "factory", None), "wrappedFactory", None)
    negotiating = IProtocolNegotiationFactory(wrapped, None)
    if negotiating is not None:
        for protocol in negotiating.acceptableProtocols():
            if protocol in offered:
                return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLServerConnectionCreator)
class ReloadingServerTLS:
    """
    Makes the server side of each TLS connection with the certificates last
    read; L{reload} reads them again.

    @ivar listener: Where the files are.
    @ivar what: How the log names the listener (C{tcp-echo ssl:8443:...}).
    """

    def __init__(self, listener: TLSListener, what: str) -> None:
        self.listener = listener
        self.what = what
        self._options = loadCertificates(listener)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._options.getContext(), None)

    def reload(self) -> bool:
        """
        Read the files again; new connections use them.  When they cannot
        be used, log why and keep the certificates read before.

        @return: Whether the new files are in use.
        """
        try:
            self._options = loadCertificates(self.listener)
        except (TLSFileError, SSL.Error, ValueError) as e:
            _log.error(
                "{what}: TLS certificates not reloaded, keeping the old ones: {reason}",
                event="tls_reload_failed",
                what=self.what,
                reason=str(e).splitlines()[0] if str(e) else type(e).__name__,
            )
            return False
        _log.info(
            "{what}: TLS certificates reloaded",
            event="tls_reloaded",
            what=self.what,
        )
        return True


def describeTLS(listener: TLSListener) -> str:
    """
    What the C{listening} event says about a TLS listener.
    """
    if listener.clientCA is None:
        return "TLS"
    return "TLS, client certificates required"


def peerSubject(transport: Any) -> str | None:
    """
    The subject of the peer's verified certificate, as RFC 4514 writes it
    (C{CN=alice}, C{CN=alice,O=Lab}), or L{None} when the connection is not
    TLS, the handshake is not done, or the peer sent no certificate (a
    listener without C{clientCA} asks for none, so any certificate seen
    here was verified).
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    if getPeerCertificate is None:
        return None
    try:
        certificate = getPeerCertificate()
    except (SSL.Error, AttributeError):
        return None
    if certificate is None:
        return None
    subject: str = certificate.to_cryptography().subject.rfc4514_string()
    return subject
