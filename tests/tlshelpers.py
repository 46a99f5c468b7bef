"""
Throwaway certificates for the TLS tests: a CA, a server certificate for
127.0.0.1, ::1 and localhost, and client certificates, made with the
C{cryptography} package (which Twisted's C{tls} extra installs).

L{makePKI} writes them as PEM files into a directory of the test's own.
"""

from __future__ import annotations

import datetime
import os

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PKI", "makeCertificate", "makePKI"]

_DAY = datetime.timedelta(days=1)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def makeCertificate(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    server: bool = False,
    hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A certificate for C{CN=subject} and its key: a self-signed CA when
    C{issuer} is L{None}, else signed by C{issuer} (a server certificate
    for C{hosts}, or a client certificate).
    """
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        signer = key
    else:
        signer = issuer[1]
        usage = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if server
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            )
    return builder.sign(signer, hashes.SHA256()), key


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@frozen
class PKI:
    """
    The files L{makePKI} wrote: each a path.

    @ivar ca: The CA's certificate (trusted by clients and, with
        C{--tls-client-ca}, by the server).
    @ivar cert: The server's certificate, signed by C{ca}.
    @ivar key: The server's key.
    @ivar clientCert: C{CN=alice}'s certificate, signed by C{ca}.
    @ivar foreignCA: Another CA.
    @ivar foreignCert: C{CN=mallory}'s certificate, signed by C{foreignCA}.
    """

    directory: str
    ca: str
    cert: str
    key: str
    clientCert: str
    clientKey: str
    foreignCA: str
    foreignCert: str
    foreignKey: str

    def serverDescription(self, port: int = 0, interface: str = "127.0.0.1") -> str:
        """
        An C{ssl:} description with this server certificate.
        """
        return (
            f"ssl:{port}:privateKey={self.key}:certKey={self.cert}"
            f":interface={interface}"
        )


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def makePKI(
    directory: str,
    server: str = "server",
    hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
) -> PKI:
    """
    Make a CA, a server certificate (C{CN=server}, for C{hosts}), a client certificate
    (C{CN=alice}) and a foreign CA with its own client (C{CN=mallory}), as
    PEM files in C{directory} (made if missing).
    """
    os.makedirs(directory, exist_ok=True)
    ca = makeCertificate("netdemo test CA")
    foreign = makeCertificate("foreign CA")
    cert, key = makeCertificate(server, ca, server=True, hosts=hosts)
    clientCert, clientKey = makeCertificate("alice", ca)
    foreignCert, foreignKey = makeCertificate("mallory", foreign)

    def at(name: str) -> str:
        return os.path.join(directory, name)

    return PKI(
        directory=directory,
        ca=_write(at("ca.pem"), _pem(ca[0])),
        cert=_write(at("server.pem"), _pem(cert)),
        key=_write(at("server.key"), _keyPEM(key)),
        clientCert=_write(at("alice.pem"), _pem(clientCert)),
        clientKey=_write(at("alice.key"), _keyPEM(clientKey)),
        foreignCA=_write(at("foreign-ca.pem"), _pem(foreign[0])),
        foreignCert=_write(at("mallory.pem"), _pem(foreignCert)),
        foreignKey=_write(at("mallory.key"), _keyPEM(foreignKey)),
    )
