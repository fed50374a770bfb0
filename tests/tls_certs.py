"""Throw-away TLS material for tests: a self-signed CA, a server and a client certificate.

Made with the ``cryptography`` package when it is installed (moto, a dev dependency, brings
it), else with the ``openssl`` command. The server certificate is valid for 127.0.0.1 and
localhost, so clients verify the hostname as they would in production.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BACKENDS", "TlsFiles", "available_backends", "make_tls_files", "server_context"]

BACKENDS = ("cryptography", "openssl")
_DAYS = 2


@dataclass(frozen=True)
class TlsFiles:
    """PEM files; keys are unencrypted."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def available_backends() -> list[str]:
    found = []
    if importlib.util.find_spec("cryptography") is not None:
        found.append("cryptography")
    if shutil.which("openssl"):
        found.append("openssl")
    return found


def make_tls_files(directory: Path, backend: str | None = None) -> TlsFiles:
    """Write a CA, a server and a client certificate under ``directory``."""
    backends = available_backends()
    if backend is None:
        if not backends:
            raise RuntimeError("no way to make certificates: need cryptography or openssl")
        backend = backends[0]
    if backend not in backends:
        raise RuntimeError(f"certificate backend {backend!r} unavailable (have {backends})")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    if backend == "cryptography":
        _with_cryptography(files)
    else:
        _with_openssl(files, directory)
    return files


def server_context(files: TlsFiles, *, require_client_cert: bool = False) -> ssl.SSLContext:
    """A server-side context presenting the server certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=files.ca)
    return context


def _with_cryptography(files: TlsFiles) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("fraudstream test CA"))
        .issuer_name(name("fraudstream test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(common_name: str, usage: x509.ObjectIdentifier, cert: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert.write_bytes(
            builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        write_key(key, key_path)

    leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, files.server_cert, files.server_key)
    leaf("fraudstream-client", ExtendedKeyUsageOID.CLIENT_AUTH, files.client_cert, files.client_key)


def _with_openssl(files: TlsFiles, directory: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    ca_key = directory / "ca.key"
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(
        *["req", "-x509", *ec_key, "-keyout", str(ca_key), "-out", str(files.ca)],
        *["-days", str(_DAYS), "-subj", "/CN=fraudstream test CA"],
        *["-addext", "basicConstraints=critical,CA:TRUE"],
        *["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    )

    def leaf(subject: str, extensions: str, cert: Path, key: Path) -> None:
        csr = cert.with_suffix(".csr")
        ext = cert.with_suffix(".ext")
        ext.write_text(extensions)
        run("req", *ec_key, "-keyout", str(key), "-out", str(csr), "-subj", subject)
        run(
            *["x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key)],
            *["-CAcreateserial", "-out", str(cert), "-days", str(_DAYS), "-extfile", str(ext)],
        )

    leaf(
        "/CN=127.0.0.1",
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        files.server_cert,
        files.server_key,
    )
    leaf(
        "/CN=fraudstream-client",
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
        files.client_cert,
        files.client_key,
    )
