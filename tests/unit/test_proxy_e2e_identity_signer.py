"""The test certificate signer of the proxy end-to-end check (deploy/local/proxy_e2e).

It is test tooling, but it answers a gRPC method to whoever connects, so the
checks are the usual ones for hostile input: only the holder of the token gets
a certificate, only for the one identity, only for a well-formed, self-signed
P-256 CSR, and no input makes it fail with anything but a clean gRPC status.
A certificate it issues must be one the proxy accepts: a chain to the trust
anchor, the identity as DNS SAN, usable for both TLS client and server.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given, settings
from hypothesis import strategies as st

# The signer lives with the end-to-end script, outside the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))

from proxy_e2e.identity_signer import (
    MAX_CSR_BYTES,
    SERVICE_NAME,
    CertifyRejected,
    IdentityCa,
    IdentitySigner,
    load_messages,
    start_signer,
    write_proxy_documents,
)

IDENTITY = "ingress.e2e.serviceaccount.identity.linkerd.cluster.local"
TOKEN = b"a-token-only-the-test-knows"


@pytest.fixture(scope="module")
def ca() -> IdentityCa:
    return IdentityCa.create()


@pytest.fixture(scope="module")
def signer(ca: IdentityCa) -> IdentitySigner:
    return IdentitySigner(ca, identity=IDENTITY, token=TOKEN)


@pytest.fixture(scope="module")
def csr_der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("identity")
    write_proxy_documents(directory, IDENTITY)
    return (directory / "csr.der").read_bytes()


def _request(*, identity: str = IDENTITY, token: bytes = TOKEN, csr: bytes = b"") -> Any:
    return load_messages().CertifyRequest(
        identity=identity, token=token, certificate_signing_request=csr
    )


def _csr(names: list[str], key: Any = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    common_name = [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(common_name))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_documents_are_what_the_proxy_reads(tmp_path: Path) -> None:
    write_proxy_documents(tmp_path, IDENTITY)
    key = serialization.load_der_private_key((tmp_path / "key.p8").read_bytes(), password=None)
    csr = x509.load_der_x509_csr((tmp_path / "csr.der").read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert csr.public_key() == key.public_key()
    assert (tmp_path / "key.p8").stat().st_mode & 0o077 == 0


def test_issued_chain_verifies_to_the_trust_anchor(
    ca: IdentityCa, signer: IdentitySigner, csr_der: bytes
) -> None:
    response = signer.certify(_request(csr=csr_der))
    leaf = x509.load_der_x509_certificate(response.leaf_certificate)
    intermediates = [x509.load_der_x509_certificate(c) for c in response.intermediate_certificates]
    anchors = x509.load_pem_x509_certificates(ca.trust_anchors_pem().encode())

    verifier = PolicyBuilder().store(Store(anchors)).build_server_verifier(x509.DNSName(IDENTITY))
    chain = verifier.verify(leaf, intermediates)
    assert chain[-1] == anchors[0]

    assert leaf.public_key() == x509.load_der_x509_csr(csr_der).public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [IDENTITY]
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    valid_until = response.valid_until.ToDatetime(tzinfo=datetime.UTC)
    assert valid_until == leaf.not_valid_after_utc
    assert valid_until > datetime.datetime.now(datetime.UTC)


def test_identity_longer_than_a_common_name_is_certified(ca: IdentityCa, tmp_path: Path) -> None:
    # 65 characters: X.509 caps a CN at 64, real Linkerd identities are often longer.
    long_identity = "default.kube-system.serviceaccount.identity.linkerd.cluster.local"
    assert len(long_identity) > 64
    write_proxy_documents(tmp_path, long_identity)
    signer = IdentitySigner(ca, identity=long_identity, token=TOKEN)
    response = signer.certify(
        _request(identity=long_identity, csr=(tmp_path / "csr.der").read_bytes())
    )
    leaf = x509.load_der_x509_certificate(response.leaf_certificate)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [long_identity]


@pytest.mark.parametrize("token", [b"", b"wrong", TOKEN + b"x", TOKEN[:-1]])
def test_wrong_token_is_denied(signer: IdentitySigner, csr_der: bytes, token: bytes) -> None:
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(token=token, csr=csr_der))
    assert rejected.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_another_identity_is_denied(signer: IdentitySigner) -> None:
    other = "default.kube-system.serviceaccount.identity.linkerd.cluster.local"
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(identity=other, csr=_csr([other])))
    assert rejected.value.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "names",
    [
        [IDENTITY, "kubernetes.default.svc.cluster.local"],
        ["kubernetes.default.svc.cluster.local"],
    ],
)
def test_csr_naming_anything_else_is_invalid(signer: IdentitySigner, names: list[str]) -> None:
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(csr=_csr(names)))
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_key_the_proxy_cannot_use_is_invalid(signer: IdentitySigner) -> None:
    for key in (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
    ):
        with pytest.raises(CertifyRejected) as rejected:
            signer.certify(_request(csr=_csr([IDENTITY], key)))
        assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_csr_with_a_broken_signature_is_invalid(signer: IdentitySigner, csr_der: bytes) -> None:
    tampered = bytearray(csr_der)
    tampered[-3] ^= 0x55  # inside the signature, the last field of the DER
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(csr=bytes(tampered)))
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_csr_is_invalid(signer: IdentitySigner, csr_der: bytes) -> None:
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(csr=csr_der + b"\0" * MAX_CSR_BYTES))
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT


@settings(max_examples=200, deadline=None)
@given(
    identity=st.text(max_size=300),
    token=st.binary(max_size=64),
    csr=st.binary(max_size=2048),
)
def test_hostile_requests_end_in_a_clean_rejection(
    signer: IdentitySigner, identity: str, token: bytes, csr: bytes
) -> None:
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(identity=identity, token=token, csr=csr))
    assert rejected.value.code in (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@settings(max_examples=100, deadline=None)
@given(csr=st.binary(max_size=2048))
def test_garbage_csr_from_the_token_holder_is_invalid(signer: IdentitySigner, csr: bytes) -> None:
    with pytest.raises(CertifyRejected) as rejected:
        signer.certify(_request(csr=csr))
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_certify_over_grpc(ca: IdentityCa, csr_der: bytes) -> None:
    signer = IdentitySigner(ca, identity=IDENTITY, token=TOKEN)
    server, port = await start_signer(signer, "127.0.0.1:0")
    messages = load_messages()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            certify = channel.unary_unary(
                f"/{SERVICE_NAME}/Certify",
                request_serializer=messages.CertifyRequest.SerializeToString,
                response_deserializer=messages.CertifyResponse.FromString,
            )
            response = await certify(_request(csr=csr_der), timeout=10)
            assert x509.load_der_x509_certificate(response.leaf_certificate)
            assert signer.certified == 1

            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await certify(_request(token=b"nope", csr=csr_der), timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert signer.certified == 1
    finally:
        await server.stop(grace=None)
