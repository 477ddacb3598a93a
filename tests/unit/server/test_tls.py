"""petcd.server.tls: etcd's client TLS flags checked, and the auto-TLS certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from petcd.server.errors import ConfigError, UnsupportedFeatureError
from petcd.server.tls import (
    SUPPORTED_SUITES,
    ClientTLS,
    PeerTLS,
    cert_matches_host,
    check_files,
    cipher_suites,
    read_crls,
    self_cert,
    tls_versions,
)
from tests.tlsfiles import make_tls_files


def test_cipher_suites_take_go_names_and_refuse_the_rest() -> None:
    assert cipher_suites("") == ()
    assert cipher_suites(
        " TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305 ,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
    ) == ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
    assert cipher_suites("TLS_AES_256_GCM_SHA384") == ()  # TLS 1.3: not configurable, dropped
    with pytest.raises(UnsupportedFeatureError, match="TLS_RSA_WITH_AES_128_GCM_SHA256"):
        cipher_suites("TLS_RSA_WITH_AES_128_GCM_SHA256")
    with pytest.raises(ConfigError, match='unexpected TLS cipher suite "bogus"'):
        cipher_suites("bogus")


def test_the_supported_suites_are_the_front_ends() -> None:
    frontend = pytest.importorskip("petcd._frontend")
    assert sorted(SUPPORTED_SUITES) == sorted(frontend.tls12_cipher_suites())


def test_tls_versions() -> None:
    assert tls_versions("", "", ()) == ("1.2", "1.3")
    assert tls_versions("TLS1.2", "", ()) == ("1.2", "1.3")
    assert tls_versions("TLS1.3", "", ()) == ("1.3",)
    assert tls_versions("", "TLS1.2", ("x",)) == ("1.2",)
    assert tls_versions("TLS1.3", "TLS1.3", ()) == ("1.3",)
    with pytest.raises(ConfigError, match="greater than max version"):
        tls_versions("TLS1.3", "TLS1.2", ())
    with pytest.raises(ConfigError, match=r"only TLS1\.3"):
        tls_versions("TLS1.3", "", ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",))
    with pytest.raises(ConfigError, match=r'unexpected TLS version "TLS1\.0"'):
        tls_versions("", "TLS1.0", ())


def test_check_files() -> None:
    check_files("", "", "", False)
    check_files("/c", "/k", "/ca", True)
    with pytest.raises(ConfigError, match=r"\[key: , cert: /c\]"):
        check_files("/c", "", "", False)
    with pytest.raises(UnsupportedFeatureError):
        check_files("/c", "/k", "", True)


def test_self_cert_is_made_once_for_the_hosts(tmp_path: Path) -> None:
    made: list[str] = []
    d = tmp_path / "fixtures" / "client"
    cert_path, key_path = self_cert(
        str(d), ["127.0.0.1", "node1.example"], 2, lambda m, p: made.append(m)
    )
    assert made == ["created cert file", "created key file"]
    assert Path(key_path).stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["node1.example"]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life == datetime.timedelta(days=730)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    before = Path(cert_path).read_bytes()
    assert self_cert(str(d), ["127.0.0.1"], 1, lambda m, p: made.append(m)) == (cert_path, key_path)
    assert Path(cert_path).read_bytes() == before and len(made) == 2
    # the pair is usable by a TLS server
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
    with pytest.raises(ConfigError, match="selfSignedCertValidity"):
        self_cert(str(tmp_path / "other"), [], 0, lambda m, p: None)


def test_client_tls_material_for_each_transport(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    tls = ClientTLS(files["server"], files["server_key"], files["ca"], ("1.2",), SUPPORTED_SUITES)
    cert, _key, ca, versions, suites, crls, hostnames = tls.frontend_args()
    assert cert.startswith(b"-----BEGIN CERTIFICATE") and ca is not None
    assert versions == ["1.2"] and suites == list(SUPPORTED_SUITES) and crls == hostnames == []
    ctx = tls.ssl_context()  # every supported suite has an OpenSSL name OpenSSL accepts
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert tls.grpc_credentials() is not None
    missing = ClientTLS(str(tmp_path / "nope.pem"), files["server_key"], "", ("1.3",), ())
    with pytest.raises(ConfigError, match=r"cannot read the certificate file \(--cert-file\)"):
        missing.frontend_args()
    assert (
        ClientTLS(files["server"], files["server_key"], "", ("1.3",), ()).ssl_context().verify_mode
        == ssl.CERT_NONE
    )


def test_peer_tls_contexts(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    tls = PeerTLS(files["peer"], files["peer_key"], files["ca"], ("1.2", "1.3"), ())
    server = tls.server_context()
    assert server.verify_mode == ssl.CERT_REQUIRED  # the CA given: peers must show a cert
    client = tls.client_context()
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    auto = PeerTLS(files["peer"], files["peer_key"], "", ("1.3",), (), self_signed=True)
    assert auto.server_context().verify_mode == ssl.CERT_NONE
    loose = auto.client_context()
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    assert loose.minimum_version == ssl.TLSVersion.TLSv1_3
    bad = PeerTLS(files["ca"], files["peer_key"], "", ("1.2",), ())
    with pytest.raises(ConfigError, match="cannot use the peer TLS files"):
        bad.server_context()


def test_revocation_lists_reach_every_context(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    for crl in (files["crl"], files["crl_der"]):
        ders = read_crls(crl, "--client-crl-file")
        assert len(ders) == 1 and ders[0] == Path(files["crl_der"]).read_bytes()
        client = ClientTLS(files["server"], files["server_key"], files["ca"], ("1.2",), (), crl)
        assert client.frontend_args()[5] == ders
        assert client.ssl_context().verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
        peer = PeerTLS(files["peer"], files["peer_key"], files["ca"], ("1.2",), (), crl_file=crl)
        assert peer.server_context().verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    with pytest.raises(ConfigError, match="cannot parse the revocation list"):
        read_crls(files["ca"], "--client-crl-file")
    with pytest.raises(UnsupportedFeatureError, match="--client-crl-file needs --trusted-ca-file"):
        check_files("/c", "/k", "", False, crl_file="/crl")


def test_peer_certificate_names_as_go_matches_them() -> None:
    cert = {
        "subject": ((("countryName", "CN"),), (("commonName", "peer.example.com"),)),
        "subjectAltName": (("DNS", "*.example.com"), ("DNS", "Localhost"), ("IP Address", "::1")),
    }
    assert cert_matches_host(cert, "a.example.com")
    assert cert_matches_host(cert, "LOCALHOST.")
    assert not cert_matches_host(cert, "example.com")  # * is one whole label
    assert not cert_matches_host(cert, "a.b.example.com")
    assert cert_matches_host(cert, "0:0::1")
    assert not cert_matches_host(cert, "127.0.0.1")
    assert not cert_matches_host(cert, "peer.example.com.evil")
    tls = PeerTLS("c", "k", "ca", ("1.2",), (), allowed_cns=("x", "peer.example.com"))
    check = tls.names_check()
    assert check is not None and check(cert) and not check({"subject": ()})
    by_host = PeerTLS("c", "k", "ca", ("1.2",), (), allowed_hostnames=("nope", "z.example.com"))
    check = by_host.names_check()
    assert check is not None and check(cert)
    assert PeerTLS("c", "k", "ca", ("1.2",), ()).names_check() is None
