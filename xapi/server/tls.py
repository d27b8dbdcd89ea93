"""The host's TLS certificate: self-signed, made with `cryptography` on first start (like xapi's gencert)
and kept in the data folder as one PEM file (private key, then certificate), as xapi keeps xapi-ssl.pem.

The listener accepts TLS 1.2 and 1.3 only. A new certificate is loaded into the listener's SSLContext in
place (`reload`): handshakes that start afterwards present it, connections already open keep theirs.
"""
from __future__ import annotations

import datetime
import gc
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from xapi import atomic

# TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are all of that already).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def make_certificate(address: str, days: int = 3650) -> bytes:
    """A new RSA key and a self-signed certificate for this host, as PEM (key first).

    Named after the host name, valid for it, "localhost", 127.0.0.1 and `address` (when it is an IP).
    CPU-bound (key generation): run it off the event loop."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alt: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(address)
        if not ip.is_unspecified and str(ip) != "127.0.0.1":
            alt.append(x509.IPAddress(ip))
    except ValueError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)


def write_atomically(path: str, data: bytes) -> None:
    """Replaces `path` (mode 0600: it holds the private key) atomically."""
    atomic.write_file(path, data, 0o600)


def ensure_certificate(path: str, address: str) -> None:
    if os.path.exists(path):
        return
    write_atomically(path, make_certificate(address))


def server_context(path: str) -> ssl.SSLContext:
    """The listener's context: TLS 1.2 or later, strong suites, the certificate and key from `path`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(path)
    return ctx


def check_loadable(path: str) -> None:
    """Raises ssl.SSLError unless `path` holds a certificate and its matching key."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path)


def reload(ctx: ssl.SSLContext, path: str) -> None:
    """Loads `path` into a live server context: new handshakes present the new certificate.
    Call it on the event loop thread (the one that runs handshakes)."""
    ctx.load_cert_chain(path)


def read_control(transport):
    """The transport whose reading to pause for flow control: under uvloop's TLS transport, the TCP
    transport beneath it. Pausing the TLS transport itself leaves the records that keep arriving in
    uvloop's input buffer, which it drops if the TCP connection then ends without a TLS close_notify
    (uvloop's SSLProtocol.eof_received; MagicStack/uvloop#661): the end of an upload whose client
    just closes (Xen Orchestra's) would be lost. Paused below, nothing waits undecrypted above and
    the end of the connection is only seen once reading resumes."""
    proto = transport.get_extra_info("uvloop.sslproto")
    if proto is not None:
        try:
            from uvloop.loop import TCPTransport, UnixTransport
        except ImportError:
            return transport
        # uvloop exposes no accessor: the TCP transport is one of the objects the protocol holds
        for ref in gc.get_referents(proto):
            if isinstance(ref, (TCPTransport, UnixTransport)):
                return ref
    return transport


@dataclass(frozen=True)
class CertInfo:
    pem: str                     # the certificate alone, PEM
    fingerprint: str             # SHA-256 of the DER form, "AB:CD:...", as xapi shows it
    not_before: datetime.datetime
    not_after: datetime.datetime


def certificate_info(pem: bytes) -> CertInfo:
    """The (first) certificate in a PEM file that may also hold the private key."""
    cert = x509.load_pem_x509_certificate(_first_certificate(pem))
    digest = cert.fingerprint(hashes.SHA256())
    return CertInfo(pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                    fingerprint=":".join(f"{b:02X}" for b in digest),
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)


_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def _first_certificate(pem: bytes) -> bytes:
    start = pem.find(_BEGIN)
    end = pem.find(_END, start)
    if start < 0 or end < 0:
        raise ValueError("no certificate in the PEM data")
    return pem[start:end + len(_END)] + b"\n"


def _error(code: str, *params):
    from xapi.datamodel.errors import XapiError
    return XapiError(code, *params)


def _rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def server_certificate_file(certificate: str, private_key: str, chain: str,
                            now: datetime.datetime | None = None) -> bytes:
    """The listener's PEM file (key, certificate, chain) for a certificate a user installs, after
    xapi's checks (host.install_server_certificate): an RSA key of 2048 to 4096 bits, a certificate of
    that key, valid now and signed with SHA-256, and a chain (optional) of certificates. Raises
    XapiError with xapi's SERVER_CERTIFICATE_* codes and parameters."""
    from cryptography.exceptions import UnsupportedAlgorithm
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except UnsupportedAlgorithm as e:
        raise _error("SERVER_CERTIFICATE_KEY_ALGORITHM_NOT_SUPPORTED", str(e)) from None
    except (ValueError, TypeError):
        raise _error("SERVER_CERTIFICATE_KEY_INVALID") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _error("SERVER_CERTIFICATE_KEY_ALGORITHM_NOT_SUPPORTED", type(key).__name__)
    if not 2048 <= key.key_size <= 4096:
        raise _error("SERVER_CERTIFICATE_KEY_RSA_LENGTH_NOT_SUPPORTED", str(key.key_size))
    try:
        cert = x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        raise _error("SERVER_CERTIFICATE_INVALID") from None
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or public.public_numbers() != key.public_key().public_numbers():
        raise _error("SERVER_CERTIFICATE_KEY_MISMATCH")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now < cert.not_valid_before_utc:
        raise _error("SERVER_CERTIFICATE_NOT_VALID_YET", _rfc3339(now), _rfc3339(cert.not_valid_before_utc))
    if now > cert.not_valid_after_utc:
        raise _error("SERVER_CERTIFICATE_EXPIRED", _rfc3339(now), _rfc3339(cert.not_valid_after_utc))
    if not isinstance(cert.signature_hash_algorithm, hashes.SHA256):
        raise _error("SERVER_CERTIFICATE_SIGNATURE_NOT_SUPPORTED")
    parts = [key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()),
             cert.public_bytes(serialization.Encoding.PEM)]
    if chain:
        try:
            chain_certs = x509.load_pem_x509_certificates(chain.encode())
        except ValueError:
            raise _error("SERVER_CERTIFICATE_CHAIN_INVALID") from None
        parts += [c.public_bytes(serialization.Encoding.PEM) for c in chain_certs]
    return b"".join(parts)


def load_ca_certificate(pem: str) -> x509.Certificate:
    """A CA certificate a user installs pool-wide; INVALID_VALUE as xapi when it is not one PEM X.509."""
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise _error("INVALID_VALUE", "certificate", "<omitted>") from None


def check_crl(pem: str, name: str) -> None:
    """A certificate revocation list a user installs: CRL_CORRUPT [name] unless PEM X.509 CRL."""
    try:
        x509.load_pem_x509_crl(pem.encode())
    except ValueError:
        raise _error("CRL_CORRUPT", name) from None


def fingerprint(cert: x509.Certificate, algorithm=None) -> str:
    """As xapi shows fingerprints: upper-case hex octets joined by colons (SHA-256 unless told)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(algorithm or hashes.SHA256()))
