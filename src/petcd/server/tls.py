"""TLS on the client listeners: etcd's client security flags, checked and loaded.

Theory of operation
-------------------
``Config`` keeps the flags as given (``--cert-file``, ``--key-file``, ``--trusted-ca-file``,
``--client-cert-auth``, ``--auto-tls``, ``--tls-min-version``, ``--tls-max-version``,
``--cipher-suites``, ``--self-signed-cert-validity``); ``check`` refuses what etcd refuses,
with etcd's messages, when the configuration is built. At start ``client_tls`` resolves them
into a ``ClientTLS``: with ``--auto-tls`` and no certificate given it makes (or reuses) a
self-signed one in ``<data-dir>/fixtures/client``, as etcd does. A ``ClientTLS`` reads its
files (errors name them) and gives each transport what it takes: the native front end the
PEM bytes (``frontend_args``), grpc.aio its server credentials, aiohttp an ``ssl`` context.

etcd's rules (its ``transport.TLSInfo.ServerConfig``): a client certificate is required,
and verified against the trusted CAs, when ``--trusted-ca-file`` is given or
``--client-cert-auth`` is set; the minimum version is TLS 1.2 unless set; cipher suites
apply to TLS 1.2 only (Go's TLS 1.3 suites are not configurable).

See docs/enhancements/0009-client-tls.md.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from petcd.server.errors import ConfigError, UnsupportedFeatureError

if TYPE_CHECKING:
    from petcd.server.config import Config
    from petcd.server.log import Logger

# The TLS 1.2 suites petcd's front end offers (rustls with ring), by IANA name.
SUPPORTED_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
# Go's short names for two of them, which etcd accepts too.
_ALIASES = {
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
}
# TLS 1.3's suites: Go accepts their names and ignores them (they are not configurable).
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# The other suites Go knows (CBC, RSA key exchange, RC4, 3DES): etcd takes them, petcd's
# TLS library does not offer them.
_GO_ONLY_SUITES = (
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
)
_VERSIONS = {"": 0, "TLS1.2": 12, "TLS1.3": 13}


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """The client listeners' TLS, resolved: files to read and what to offer."""

    cert_file: str
    key_file: str
    trusted_ca_file: str  # "" = no client certificates asked for
    versions: tuple[str, ...]  # of "1.2", "1.3"
    cipher_suites: tuple[str, ...]  # TLS 1.2 suites by IANA name; () = the defaults
    crl_file: str = ""  # --client-crl-file: revoked client certificates are refused
    # --client-cert-allowed-hostname: a client certificate must be valid for one of them
    allowed_hostnames: tuple[str, ...] = ()
    # --client-cert-file / --client-key-file: presented when this member connects to client
    # URLs as a client ("": cert_file and key_file, as etcd)
    client_cert_file: str = ""
    client_key_file: str = ""

    def dial_credentials(self) -> tuple[bytes | None, bytes, bytes]:
        """(root CAs or None for the system's, private key, certificate chain) for dialling
        another member's https client URL: the trusted CAs verify its certificate, this
        member's client certificate (or its served one) is presented."""
        ca = self._read(self.trusted_ca_file, "trusted CA file") if self.trusted_ca_file else None
        if self.client_cert_file:
            cert = self._read(self.client_cert_file, "certificate file (--client-cert-file)")
            key = self._read(self.client_key_file, "key file (--client-key-file)")
        else:
            cert = self._read(self.cert_file, "certificate file (--cert-file)")
            key = self._read(self.key_file, "key file (--key-file)")
        return ca, key, cert

    def _read(self, path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the {what} {path!r}: {e.strerror}") from None

    def frontend_args(
        self,
    ) -> tuple[bytes, bytes, bytes | None, list[str], list[str], list[bytes], list[str]]:
        """``petcd._frontend.Frontend``'s ``tls=``."""
        ca = self._read(self.trusted_ca_file, "trusted CA file") if self.trusted_ca_file else None
        return (
            self._read(self.cert_file, "certificate file (--cert-file)"),
            self._read(self.key_file, "key file (--key-file)"),
            ca,
            list(self.versions),
            list(self.cipher_suites),
            read_crls(self.crl_file, "--client-crl-file") if self.crl_file else [],
            list(self.allowed_hostnames),
        )

    def grpc_credentials(self) -> Any:
        """grpc.aio's server credentials (the ``grpcio`` client transport)."""
        import grpc

        if self.crl_file:
            raise UnsupportedFeatureError(
                "--client-crl-file is not supported with --client-transport=grpcio"
            )
        if self.allowed_hostnames:
            raise UnsupportedFeatureError(
                "--client-cert-allowed-hostname is not supported with --client-transport=grpcio"
            )
        cert, key, ca, *_ = self.frontend_args()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A server context for aiohttp (``--listen-client-http-urls``, metrics)."""
        for path, what in (
            (self.cert_file, "certificate file (--cert-file)"),
            (self.key_file, "key file (--key-file)"),
        ):
            self._read(path, what)  # errors that name the file and its flag
        ctx = _server_context(
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            (self.crl_file, "--client-crl-file"),
            self.versions,
            self.cipher_suites,
            "client",
        )
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def _limit(ctx: ssl.SSLContext, versions: Sequence[str], suites: Sequence[str]) -> None:
    """The TLS versions (of "1.2", "1.3") and TLS 1.2 cipher suites a context offers."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if "1.2" in versions else ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if "1.3" in versions else ssl.TLSVersion.TLSv1_2
    if suites:
        ctx.set_ciphers(":".join(_openssl_name(s) for s in suites))


def _server_context(
    cert_file: str,
    key_file: str,
    ca_file: str,
    crl: tuple[str, str],
    versions: Sequence[str],
    suites: Sequence[str],
    side: str,
) -> ssl.SSLContext:
    """Python's server context with etcd's rules: a client certificate is required and
    verified when CAs are given (and checked against the revocation list ``crl``: its path
    and flag). ``side`` ("client", "peer") names the files in errors."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        _limit(ctx, versions, suites)
        ctx.load_cert_chain(cert_file, key_file)
        if ca_file:
            ctx.load_verify_locations(ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
            _load_crls(ctx, *crl)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"cannot use the {side} TLS files: {e}") from None
    return ctx


@dataclass(frozen=True, slots=True)
class PeerTLS:
    """The peer listeners' and dialers' TLS, resolved (etcd's ``--peer-*`` TLS flags)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str  # "" = no client certificates asked for; the system's CAs verify
    versions: tuple[str, ...]
    cipher_suites: tuple[str, ...]
    self_signed: bool = False  # --peer-auto-tls: peers' certificates are not verified
    crl_file: str = ""  # --peer-crl-file: members with a revoked certificate are refused
    # --peer-cert-allowed-cn / --peer-cert-allowed-hostname (at most one of them is given)
    allowed_cns: tuple[str, ...] = ()
    allowed_hostnames: tuple[str, ...] = ()
    # --peer-client-cert-file / --peer-client-key-file: presented when dialling peers ("":
    # cert_file and key_file, as etcd)
    client_cert_file: str = ""
    client_key_file: str = ""

    def names_check(self) -> Callable[[dict[str, Any]], bool] | None:
        """What a peer's certificate (``SSLSocket.getpeercert()``) must pass, in both
        directions, as etcd's ``VerifyPeerCertificate``: its common name one of
        ``allowed_cns``, or valid for one of ``allowed_hostnames``; None without either."""
        if self.allowed_cns:
            cns = frozenset(self.allowed_cns)
            return lambda cert: _common_name(cert) in cns
        if self.allowed_hostnames:
            hosts = self.allowed_hostnames
            return lambda cert: any(cert_matches_host(cert, h) for h in hosts)
        return None

    def server_context(self) -> ssl.SSLContext:
        """For the peer listeners: a peer's client certificate is required and verified
        when CAs are given, as etcd's ``ServerConfig`` does."""
        return _server_context(
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            (self.crl_file, "--peer-crl-file"),
            self.versions,
            self.cipher_suites,
            "peer",
        )

    def client_context(self) -> ssl.SSLContext:
        """For dialling peers: their certificates verified against the trusted CAs (the
        system's without them; not at all with ``--peer-auto-tls``, as etcd), this member's
        client certificate (``--peer-client-cert-file``, else its served one) presented."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            _limit(ctx, self.versions, self.cipher_suites)
            if self.self_signed:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif self.trusted_ca_file:
                ctx.load_verify_locations(self.trusted_ca_file)
            else:
                ctx.load_default_certs()
            if self.client_cert_file:
                ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
            else:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"cannot use the peer TLS files: {e}") from None
        return ctx


def _common_name(cert: dict[str, Any]) -> str | None:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _dns_matches(pattern: str, host: str) -> bool:
    """Go's ``matchHostnames``: case-insensitive, a ``*`` only as the whole left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    pairs = enumerate(zip(p_labels, h_labels, strict=True))
    return all(p == h or (i == 0 and p == "*") for i, (p, h) in pairs)


def cert_matches_host(cert: dict[str, Any], host: str) -> bool:
    """Go's ``Certificate.VerifyHostname``: an IP against the IP SANs, a name against the DNS
    SANs (the common name is not looked at)."""
    sans = cert.get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return any(kind == "DNS" and _dns_matches(value, host) for kind, value in sans)
    for kind, value in sans:
        if kind == "IP Address":
            try:
                if ipaddress.ip_address(value.strip()) == ip:
                    return True
            except ValueError:
                continue
    return False


def read_crls(path: str, flag: str) -> list[bytes]:
    """The certificate revocation lists in ``path`` (PEM, one or more, or DER, as Go's
    ``x509.ParseCRL`` reads), DER-encoded."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(
            f"cannot read the revocation list ({flag}) {path!r}: {e.strerror}"
        ) from None
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            out = []
            for block in data.split(b"-----END X509 CRL-----")[:-1]:
                pem = (
                    block[block.index(b"-----BEGIN X509 CRL-----") :] + b"-----END X509 CRL-----\n"
                )
                out.append(x509.load_pem_x509_crl(pem).public_bytes(Encoding.DER))
            return out
        return [x509.load_der_x509_crl(data).public_bytes(Encoding.DER)]
    except ValueError as e:
        raise ConfigError(f"cannot parse the revocation list ({flag}) {path!r}: {e}") from None


def _load_crls(ctx: ssl.SSLContext, path: str, flag: str) -> None:
    """Python's ssl takes revocation lists only from a PEM file: write them to one."""
    if not path:
        return
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pems = [x509.load_der_x509_crl(d).public_bytes(Encoding.PEM) for d in read_crls(path, flag)]
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(b"".join(pems))
        f.flush()
        ctx.load_verify_locations(f.name)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _openssl_name(iana: str) -> str:
    kx, _, rest = iana.removeprefix("TLS_").partition("_WITH_")
    kx = "ECDHE-ECDSA" if kx == "ECDHE_ECDSA" else "ECDHE-RSA"
    if rest.startswith("CHACHA20"):
        return f"{kx}-CHACHA20-POLY1305"
    size = "128" if "AES_128" in rest else "256"
    return f"{kx}-AES{size}-GCM-{'SHA256' if size == '128' else 'SHA384'}"


def cipher_suites(text: str) -> tuple[str, ...]:
    """``--cipher-suites``: TLS 1.2 suites by IANA name (TLS 1.3 names dropped), or an
    error naming the first unknown or unsupported one."""
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name in SUPPORTED_SUITES:
            out.append(name)
        elif name in _TLS13_SUITES:
            continue
        elif name in _GO_ONLY_SUITES:
            raise UnsupportedFeatureError(
                f"TLS cipher suite {name!r} is not supported by petcd; "
                f"it offers: {', '.join(SUPPORTED_SUITES)}"
            )
        else:
            raise ConfigError(f'unexpected TLS cipher suite "{raw.strip()}"')
    return tuple(out)


def tls_versions(min_version: str, max_version: str, suites: Sequence[str]) -> tuple[str, ...]:
    """The versions to offer for ``--tls-min-version`` / ``--tls-max-version``, checked as
    etcd checks them."""
    for v in (min_version, max_version):
        if v not in _VERSIONS:
            raise ConfigError(f'unexpected TLS version "{v}" (must be one of: TLS1.2, TLS1.3)')
    lo, hi = _VERSIONS[min_version] or 12, _VERSIONS[max_version]
    if hi and lo > hi:
        raise ConfigError(
            f"min version ({min_version}) is greater than max version ({max_version})"
        )
    if lo == 13 and suites:
        raise ConfigError("cipher suites cannot be configured when only TLS1.3 is enabled")
    return tuple(v for v, n in (("1.2", 12), ("1.3", 13)) if n >= lo and (not hi or n <= hi))


def check_files(
    cert_file: str,
    key_file: str,
    ca_file: str,
    client_cert_auth: bool,
    peer: bool = False,
    crl_file: str = "",
) -> None:
    """etcd's refusals of a half-given pair and of client authentication without CAs; a
    revocation list needs the CAs too (petcd checks it while verifying the chain)."""
    if bool(cert_file) != bool(key_file):
        raise ConfigError(
            f"KeyFile and CertFile must both be present[key: {key_file}, cert: {cert_file}]"
        )
    if client_cert_auth and not ca_file:
        p = "peer-" if peer else ""
        raise UnsupportedFeatureError(
            f"--{p}client-cert-auth needs --{p}trusted-ca-file in petcd (etcd would verify "
            "client certificates against the system's CAs); give the CA that signs them"
        )
    if crl_file and not ca_file:
        p = "peer-" if peer else "client-"
        q = "peer-" if peer else ""
        raise UnsupportedFeatureError(
            f"--{p}crl-file needs --{q}trusted-ca-file in petcd: revoked certificates are "
            "refused while client certificates are verified against those CAs"
        )


def self_cert(
    directory: str, hosts: Sequence[str], years: int, log: Callable[[str, str], None]
) -> tuple[str, str]:
    """etcd's ``--auto-tls``: ``directory``'s cert.pem and key.pem, made when either is
    missing: ECDSA P-384, self-signed, for ``hosts`` (IP addresses or DNS names), server
    authentication, valid for ``years`` years. ``log(message, path)`` reports what was
    made. etcd uses P-521, which petcd's TLS library (rustls with ring) cannot sign with.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if years <= 0:
        raise ConfigError("selfSignedCertValidity is invalid,it should be greater than 0")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path = os.path.abspath(os.path.join(directory, "cert.pem"))
    key_path = os.path.abspath(os.path.join(directory, "key.pem"))
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    log("created cert file", cert_path)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    log("created key file", key_path)
    return cert_path, key_path


def client_tls(cfg: Config, log: Logger) -> ClientTLS | None:
    """The client listeners' TLS for ``cfg``, None when it has no certificate to serve;
    with ``--auto-tls`` and none given, a self-signed one (``self_cert``) in
    ``<data-dir>/fixtures/client``."""
    cert, key = cfg.cert_file, cfg.key_file
    if cfg.auto_tls:
        if cert:
            log.warn("ignoring client auto TLS since certs given")
        else:
            urls = (*cfg.listen_client_urls, *cfg.listen_client_http_urls)
            cert, key = self_cert(
                os.path.join(cfg.data_dir, "fixtures", "client"),
                [u.host for u in urls],
                cfg.self_signed_cert_validity,
                lambda message, path: log.info(message, path=path),
            )
    if not cert:
        return None
    return ClientTLS(
        cert,
        key,
        cfg.trusted_ca_file,
        cfg.tls_versions,
        cfg.cipher_suites,
        cfg.client_crl_file,
        cfg.client_cert_allowed_hostname,
        cfg.client_cert_file,
        cfg.client_key_file,
    )


def peer_tls(cfg: Config, log: Logger) -> PeerTLS | None:
    """The peer listeners' TLS for ``cfg``, None without a certificate; with
    ``--peer-auto-tls`` and none given, a self-signed one in ``<data-dir>/fixtures/peer``."""
    cert, key, self_signed = cfg.peer_cert_file, cfg.peer_key_file, False
    if cfg.peer_auto_tls:
        if cert:
            log.warn("ignoring peer auto TLS since certs given")
        else:
            cert, key = self_cert(
                os.path.join(cfg.data_dir, "fixtures", "peer"),
                [u.host for u in cfg.listen_peer_urls],
                cfg.self_signed_cert_validity,
                lambda message, path: log.info(message, path=path),
            )
            self_signed = True
    if not cert:
        return None
    return PeerTLS(
        cert,
        key,
        cfg.peer_trusted_ca_file,
        cfg.tls_versions,
        cfg.cipher_suites,
        self_signed,
        cfg.peer_crl_file,
        cfg.peer_cert_allowed_cn,
        cfg.peer_cert_allowed_hostname,
        cfg.peer_client_cert_file,
        cfg.peer_client_key_file,
    )


def warn_plain_tls(cfg: Config, log: Logger) -> None:
    """etcd's warnings for plain-text client and peer URLs next to TLS material."""
    for u in cfg.listen_peer_urls:
        if u.scheme != "http":
            continue
        if cfg.peer_cert_file:
            log.warn(
                "scheme is HTTP while key and cert files are present; ignoring key and cert files",
                peer_url=str(u),
            )
        if cfg.peer_client_cert_auth:
            log.warn(
                "scheme is HTTP while --peer-client-cert-auth is enabled; "
                "ignoring client cert auth for this URL",
                peer_url=str(u),
            )
    for u in (*cfg.listen_client_urls, *cfg.listen_client_http_urls):
        if u.secure:
            continue
        if cfg.cert_file:
            log.warn(
                "scheme is http or unix while key and cert files are present; "
                "ignoring key and cert files",
                client_url=str(u),
            )
        if cfg.client_cert_auth:
            log.warn(
                "scheme is http or unix while --client-cert-auth is enabled; "
                "ignoring client cert auth for this URL",
                client_url=str(u),
            )
