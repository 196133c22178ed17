"""TLS client contexts built from PEM bytes in memory: no certificate or key touches a disk.

Client libraries commonly write inline kubeconfig certificates and keys to
temporary files (kubernetes-asyncio does, and removes them only at exit). In
the shipped Deployment the root filesystem is read-only and there is no
writable `/tmp`, and a private key on disk outlives its Secret. Here:

* CA certificates go to OpenSSL as text (`load_verify_locations(cadata=...)`);
* a client certificate and key, which Python's `load_cert_chain` only reads
  from a path, are put in an anonymous memory file (`memfd_create`, Linux),
  read by OpenSSL through `/proc/self/fd/N`, and the file is closed at once:
  it never has a name in any filesystem and its memory is freed on close.

Encrypted keys are refused rather than prompted for (OpenSSL would otherwise
read a passphrase from the terminal).
"""

from __future__ import annotations

import os
import ssl


class TlsMaterialError(ValueError):
    """Certificates or a key that OpenSSL does not accept; the message holds no key material."""


def client_context(
    *,
    ca_pem: bytes | None,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A TLS 1.2+ client context; `ca_pem` None trusts the system store.

    Blocking (reads the system store when no CA is given): call it off the loop.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_pem is not None:
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as err:
            raise TlsMaterialError(
                f"certificate-authority-data holds no valid certificate ({_reason(err)})"
            ) from None
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_pem is not None or key_pem is not None:
        if cert_pem is None or key_pem is None:
            raise TlsMaterialError("a client certificate needs both the certificate and its key")
        load_cert_chain_from_memory(context, cert_pem, key_pem)
    return context


def load_cert_chain_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`context.load_cert_chain` from bytes, through an anonymous memory file."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:
        raise TlsMaterialError("client certificates need Linux (memfd_create) on this server")
    fd = memfd_create("link-client-credentials", os.MFD_CLOEXEC)
    try:
        _write_all(fd, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}", password=_refuse_passphrase)
    except _EncryptedKey:
        raise TlsMaterialError("client-key-data is encrypted; embed an unencrypted key") from None
    except (ssl.SSLError, OSError) as err:
        raise TlsMaterialError(
            "client-certificate-data and client-key-data are not a valid certificate "
            f"and matching key ({_reason(err)})"
        ) from None
    finally:
        os.close(fd)


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> bytes:
    raise _EncryptedKey()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reason(err: BaseException) -> str:
    """OpenSSL's short reason (never key material), or the exception's type."""
    reason = getattr(err, "reason", None)
    return str(reason) if reason else type(err).__name__
