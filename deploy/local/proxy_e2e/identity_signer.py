"""A small certificate signer a real linkerd2-proxy can get its identity from.

A Linkerd proxy serves no traffic until it holds a certificate for its own
identity: at start-up it sends the CSR it was given (``csr.der`` in
``LINKERD2_PROXY_IDENTITY_DIR``, made with the private key ``key.p8`` next to
it) and a token to ``io.linkerd.proxy.identity.Identity/Certify``, checks the
answer against ``LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`` and only then reports
ready. Linkerd's own identity controller needs a cluster with token reviews;
for the end-to-end check a signer of our own is simpler and just as real on the
wire: this module.

Test tooling, not product, but a Certify caller is still treated as hostile:
the token must match the one the test wrote, the request and CSR are bounded,
the CSR's signature must verify, its key must be the P-256 key the proxy can
use, and it may only ask for the single identity this signer was made for. The
chain is the one Linkerd deploys: a trust anchor (root) that signs an issuer,
which signs short-lived leaves; the issuer travels as the intermediate.

The messages come from our own ``identity.proto`` (same package, names and
field numbers as the public API), compiled at run time with grpcio-tools (a
dev dependency) so nothing generated is committed for a test tool.
"""

from __future__ import annotations

import datetime
import hmac
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_NAME = "io.linkerd.proxy.identity.Identity"
PROTO_PATH = Path(__file__).resolve().parent / "identity.proto"

# Bounds on what a caller may send: a P-256 CSR is about 300 bytes, a Linkerd
# token about 1 KiB; anything far larger is not a proxy.
MAX_TOKEN_BYTES = 8 * 1024
MAX_CSR_BYTES = 8 * 1024
MAX_IDENTITY_CHARS = 253
MAX_MESSAGE_BYTES = 32 * 1024

_CLOCK_SKEW = datetime.timedelta(minutes=1)
_MAX_COMMON_NAME_BYTES = 64


def load_messages() -> ModuleType:
    """Compile identity.proto and import the message module it yields.

    Compiled once per process into a temporary directory; the module is
    registered under a private name so it cannot shadow anything.
    """
    name = "_mcd_proxy_e2e_identity_pb2"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    # Imported here: grpc_tools is a dev-only dependency.
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="identity-proto-") as scratch:
        well_known = resources.files("grpc_tools") / "_proto"
        with resources.as_file(well_known) as well_known_dir:
            status = protoc.main(
                [
                    "grpc_tools.protoc",
                    f"--proto_path={PROTO_PATH.parent}",
                    f"--proto_path={well_known_dir}",
                    f"--python_out={scratch}",
                    str(PROTO_PATH),
                ]
            )
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTO_PATH} with status {status}")
        spec = importlib.util.spec_from_file_location(name, Path(scratch) / "identity_pb2.py")
        if spec is None or spec.loader is None:
            raise RuntimeError("cannot load the compiled identity messages")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _subject(identity: str) -> x509.Name:
    """CN=identity when it fits X.509's 64-character CN limit, else an empty subject.

    Identities are often longer (default.kube-system.serviceaccount.identity.
    linkerd.cluster.local is 65); the proxy only reads the DNS SAN anyway.
    """
    if len(identity.encode()) <= _MAX_COMMON_NAME_BYTES:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])
    return x509.Name([])


def _ca_certificate(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer_ski: x509.SubjectKeyIdentifier | None,
    path_length: int,
    validity: datetime.timedelta,
) -> x509.Certificate:
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki_source = issuer_ski if issuer_ski is not None else ski
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(aki_source),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass(frozen=True)
class IdentityCa:
    """A trust anchor and the issuer it signed, both ECDSA P-256 like Linkerd's."""

    root: x509.Certificate
    issuer: x509.Certificate
    issuer_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, trust_domain: str = "cluster.local") -> IdentityCa:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = f"root.linkerd.{trust_domain}"
        root = _ca_certificate(
            subject=root_name,
            key=root_key,
            issuer_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root_name)]),
            issuer_key=root_key,
            issuer_ski=None,
            path_length=1,
            validity=datetime.timedelta(days=2),
        )
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer = _ca_certificate(
            subject=f"identity.linkerd.{trust_domain}",
            key=issuer_key,
            issuer_name=root.subject,
            issuer_key=root_key,
            issuer_ski=root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value,
            path_length=0,
            validity=datetime.timedelta(days=1),
        )
        return cls(root=root, issuer=issuer, issuer_key=issuer_key)

    def trust_anchors_pem(self) -> str:
        """The value of LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS."""
        return self.root.public_bytes(serialization.Encoding.PEM).decode("ascii")


def write_proxy_documents(directory: Path, identity: str) -> None:
    """Write the key and CSR a proxy reads from LINKERD2_PROXY_IDENTITY_DIR.

    ``key.p8`` is the PKCS#8 DER private key, ``csr.der`` the request for
    ``identity`` (as DNS SAN, and CN when it fits); in a Linkerd pod a wrapper
    makes both.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(identity))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path = directory / "key.p8"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    (directory / "csr.der").write_bytes(csr.public_bytes(serialization.Encoding.DER))


class CertifyRejected(Exception):
    """A Certify request this signer refuses, with the status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _requested_names(csr: x509.CertificateSigningRequest) -> set[str]:
    names = {
        attr.value
        for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if isinstance(attr.value, str)
    }
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names.update(san.get_values_for_type(x509.DNSName))
    return names


class IdentitySigner:
    """Signs leaf certificates for exactly one identity, for callers holding the token."""

    def __init__(
        self,
        ca: IdentityCa,
        *,
        identity: str,
        token: bytes,
        leaf_validity: datetime.timedelta = datetime.timedelta(hours=24),
    ) -> None:
        if not token:
            raise ValueError("the token must not be empty")
        if not identity or len(identity) > MAX_IDENTITY_CHARS or not identity.isascii():
            raise ValueError(f"invalid identity {identity!r}")
        self._ca = ca
        self._identity = identity
        self._token = token
        self._leaf_validity = leaf_validity
        self._messages = load_messages()
        self.certified = 0

    def certify(self, request: Any) -> Any:
        """The Certify answer for ``request``, or CertifyRejected."""
        token = bytes(request.token)
        if not token or len(token) > MAX_TOKEN_BYTES or not hmac.compare_digest(token, self._token):
            raise CertifyRejected(grpc.StatusCode.PERMISSION_DENIED, "invalid token")
        identity = str(request.identity)
        if identity != self._identity:
            raise CertifyRejected(
                grpc.StatusCode.PERMISSION_DENIED, "this signer does not issue that identity"
            )
        csr_der = bytes(request.certificate_signing_request)
        if not csr_der or len(csr_der) > MAX_CSR_BYTES:
            raise CertifyRejected(grpc.StatusCode.INVALID_ARGUMENT, "missing or oversized CSR")
        try:
            csr = x509.load_der_x509_csr(csr_der)
            signature_ok = csr.is_signature_valid
            public_key = csr.public_key()
            names = _requested_names(csr)
        except ValueError as err:
            raise CertifyRejected(grpc.StatusCode.INVALID_ARGUMENT, "malformed CSR") from err
        if not signature_ok:
            raise CertifyRejected(grpc.StatusCode.INVALID_ARGUMENT, "CSR signature does not verify")
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise CertifyRejected(grpc.StatusCode.INVALID_ARGUMENT, "CSR key must be ECDSA P-256")
        if names - {identity}:
            raise CertifyRejected(
                grpc.StatusCode.INVALID_ARGUMENT, "CSR names something other than the identity"
            )

        now = _now()
        expiry = min(now + self._leaf_validity, self._ca.issuer.not_valid_after_utc)
        issuer_ski = self._ca.issuer.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_subject(identity))
            .issuer_name(self._ca.issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(expiry)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
            .sign(self._ca.issuer_key, hashes.SHA256())
        )
        response = self._messages.CertifyResponse(
            leaf_certificate=leaf.public_bytes(serialization.Encoding.DER),
            intermediate_certificates=[self._ca.issuer.public_bytes(serialization.Encoding.DER)],
        )
        response.valid_until.FromDatetime(expiry)
        self.certified += 1
        return response

    async def _certify_rpc(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return self.certify(request)
        except CertifyRejected as rejected:
            await context.abort(rejected.code, rejected.message)

    def handler(self) -> grpc.GenericRpcHandler:
        messages = self._messages
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Certify": grpc.unary_unary_rpc_method_handler(
                    self._certify_rpc,
                    request_deserializer=messages.CertifyRequest.FromString,
                    response_serializer=messages.CertifyResponse.SerializeToString,
                )
            },
        )


async def start_signer(signer: IdentitySigner, address: str) -> tuple[grpc.aio.Server, int]:
    """Serve Certify on ``address`` (host:port, port 0 for any); returns the server and port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_concurrent_streams", 16),
        ]
    )
    server.add_generic_rpc_handlers((signer.handler(),))
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    await server.start()
    return server, port
