"""Throw-away TLS material for the tests, made with ``cryptography``.

``make_tls_files(directory)`` writes a CA, a server certificate for 127.0.0.1 and
localhost signed by it, a client certificate signed by it (common name "root"), one without a
common name, a client certificate signed by a second CA the servers do not trust, and a peer
certificate (server and client authentication, for members' peer URLs) from each CA; it
returns their paths by name ("ca", "server", "server_key", "client", "client_key",
"client_no_cn", "client_no_cn_key", "stranger", "stranger_key", "peer", "peer_key",
"peer_stranger", "peer_stranger_key"), a client certificate the CA revoked
("revoked", "revoked_key") and the CA's revocation list naming it ("crl", PEM; "crl_der",
DER). ``make_member_files(directory, members)`` writes a CA and a certificate per member of
a cluster. ``make_client_files(directory, names)`` writes a CA, a server certificate and a client
certificate for each common name in ``names`` (a user name, for etcd's certificate auth).
ECDSA P-256 keys in PKCS#8, valid from five minutes ago for a day.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: tuple[x509.ObjectIdentifier, ...] = (),
    names: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)] if subject else [])
    issuer_name, signer = issuer if issuer else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
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
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_peer_files(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    """A CA ("ca") and one peer certificate ("peer", "peer_key") for every name in ``names``
    (host names and IP addresses), server and client authentication."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("petcd test CA", ca_key, None, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    cert = _cert(names[0], key, (ca.subject, ca_key), usage=usage, names=names)
    files = {"ca": ca.public_bytes(pem), "peer": cert.public_bytes(pem)}
    files["peer_key"] = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    paths = {}
    for name, data in files.items():
        path = directory / f"{name.replace('_', '-')}.pem"
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def make_member_files(directory: Path, members: dict[str, tuple[str, ...]]) -> None:
    """A CA ("ca.pem") and, for each member, a certificate ("<member>.pem", "<member>-key.pem")
    naming the member's host names and IP addresses, for server and client authentication (a
    member's client and peer URLs, and a client that presents it)."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("petcd test CA", ca_key, None, ca=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    usage = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    for member, names in members.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(member, key, (ca.subject, ca_key), usage=usage, names=names)
        (directory / f"{member}.pem").write_bytes(cert.public_bytes(pem))
        (directory / f"{member}-key.pem").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )


def make_client_files(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    """A CA ("ca"), a server certificate for 127.0.0.1 and localhost ("server", "server_key")
    and a client certificate whose common name is ``name`` ("client-<name>",
    "client-<name>_key") for every name in ``names``."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("petcd test CA", ca_key, None, ca=True)
    paths = {"ca": str(directory / "ca.pem")}
    Path(paths["ca"]).write_bytes(ca.public_bytes(pem))
    made = [("server", "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH)]
    made += [(f"client-{name}", name, ExtendedKeyUsageOID.CLIENT_AUTH) for name in names]
    for file, subject, usage in made:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, (ca.subject, ca_key), usage=(usage,))
        paths[file], paths[f"{file}_key"] = (
            str(directory / f"{file}.pem"),
            str(directory / f"{file}-key.pem"),
        )
        Path(paths[file]).write_bytes(cert.public_bytes(pem))
        Path(paths[f"{file}_key"]).write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return paths


def make_tls_files(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    files: dict[str, str] = {}

    def write(name: str, data: bytes) -> None:
        path = directory / f"{name.replace('_', '-')}.pem"
        path.write_bytes(data)
        files[name] = str(path)

    def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("petcd test CA", ca_key, None, ca=True)
    write("ca", ca.public_bytes(pem))
    both = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    for name, usage, issuer in (
        ("server", (ExtendedKeyUsageOID.SERVER_AUTH,), None),
        ("client", (ExtendedKeyUsageOID.CLIENT_AUTH,), None),
        ("client_no_cn", (ExtendedKeyUsageOID.CLIENT_AUTH,), None),
        ("stranger", (ExtendedKeyUsageOID.CLIENT_AUTH,), "other"),
        ("peer", both, None),
        ("peer_stranger", both, "other"),
        ("revoked", (ExtendedKeyUsageOID.CLIENT_AUTH,), None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        if issuer is None:
            signer = (ca.subject, ca_key)
        else:
            other_key = ec.generate_private_key(ec.SECP256R1())
            other = _cert("another CA", other_key, None, ca=True)
            signer = (other.subject, other_key)
        subject = "127.0.0.1" if name in ("server", "peer", "peer_stranger") else "root"
        subject = "" if name == "client_no_cn" else subject
        cert = _cert(subject, key, signer, usage=usage)
        write(name, cert.public_bytes(pem))
        write(f"{name}_key", key_bytes(key))
        if name == "revoked":
            revoked_serial = cert.serial_number
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(revoked_serial)
            .revocation_date(now - datetime.timedelta(minutes=1))
            .build()
        )
        .sign(ca_key, hashes.SHA256())
    )
    write("crl", crl.public_bytes(pem))
    files["crl_der"] = str(directory / "crl.der")
    Path(files["crl_der"]).write_bytes(crl.public_bytes(serialization.Encoding.DER))
    return files
