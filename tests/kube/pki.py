"""Certificates for one local test cluster.

Each cluster gets its own CA, so a kubeconfig of one cluster can never
authenticate to another: the tests of remote discovery depend on that isolation
being real. Client identities follow the Kubernetes conventions (CN is the user,
O the groups), so the bootstrap RBAC of kube-apiserver grants the controller
manager and the scheduler exactly their built-in roles.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class KeyPair:
    """PEM files of a certificate and its private key."""

    cert: Path
    key: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class ClusterPki:
    """All the files a local cluster's components are started with."""

    ca: KeyPair
    apiserver: KeyPair
    service_account_key: Path
    service_account_pub: Path
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    kwok: KeyPair


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


class _Issuer:
    def __init__(self, directory: Path, cluster: str) -> None:
        self._dir = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(f"{cluster}-ca")
        cert = (
            _builder(self._name, self._name, self._key.public_key())
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
            .sign(self._key, hashes.SHA256())
        )
        self.pair = self._save("ca", cert, self._key)

    def _save(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
        pair = KeyPair(cert=self._dir / f"{stem}.crt", key=self._dir / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair

    def issue(
        self,
        stem: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(_name(common_name, organizations), self._name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns_names or ips:
            alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return self._save(stem, builder.sign(self._key, hashes.SHA256()), key)


def create_cluster_pki(
    directory: Path, *, cluster: str, cluster_domain: str, service_ip: str
) -> ClusterPki:
    """Write a fresh CA and every certificate the cluster needs into `directory`.

    `service_ip` is the first address of the service CIDR (the `kubernetes`
    Service), which in-cluster clients use to reach the API server.
    """
    directory.mkdir(parents=True, exist_ok=True)
    issuer = _Issuer(directory, cluster)
    apiserver = issuer.issue(
        "apiserver",
        common_name="kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{cluster_domain}",
        ),
        ips=("127.0.0.1", service_ip),
        server=True,
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_path = directory / "service-account.key"
    _write_key(sa_key_path, sa_key)
    sa_pub_path = directory / "service-account.pub"
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPki(
        ca=issuer.pair,
        apiserver=apiserver,
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
        admin=issuer.issue("admin", common_name="admin", organizations=("system:masters",)),
        controller_manager=issuer.issue(
            "controller-manager", common_name="system:kube-controller-manager"
        ),
        scheduler=issuer.issue("scheduler", common_name="system:kube-scheduler"),
        # kwok plays the kubelets of every fake node and writes node and pod
        # status; the admin identity keeps its RBAC out of the way.
        kwok=issuer.issue("kwok", common_name="kwok", organizations=("system:masters",)),
    )
