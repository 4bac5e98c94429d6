"""A TEST certificate authority for the tests and the lab: never for production.

The cluster's services speak TLS (SurrealDB's `--web-crt`/`--web-key`, ...), and the tests and the
lab need certificates for them that a client can verify, without an openssl CLI on the controller
and without a real CA. This script makes them with the `cryptography` package (ansible-core already
depends on it):

    scripts/test_ca.py OUTDIR NAME=SAN[,SAN...] [NAME=SAN[,SAN...] ...]

writes OUTDIR/ca.crt and OUTDIR/ca.key once, and per NAME OUTDIR/NAME.crt and OUTDIR/NAME.key, a
server certificate signed by that CA for the given SANs (DNS names or IPv4/IPv6 addresses). Keys
are EC P-256 and mode 0600; server certificates have the serverAuth EKU and are valid 825 days.
Every subject says "cynic.cluster TEST CA — not for production".

It is idempotent, so that a converge that runs it twice changes nothing: the CA is kept while it is
valid for more than 30 days, and a certificate is kept while its SANs are the ones asked for, it was
signed by the current CA, it matches its key and it is valid for more than 30 days. Otherwise a new
one is written. Each file written is printed as `wrote PATH`, each file kept as `kept PATH`.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LABEL = "cynic.cluster TEST CA — not for production"
CERT_DAYS = 825  # the longest validity clients such as Apple's accept for a server certificate
CA_DAYS = 3650  # outlives the certificates it signs
RENEW_WITHIN = datetime.timedelta(days=30)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DNS_PATTERN = re.compile(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")

San = x509.DNSName | x509.IPAddress


def key_usage(**granted: bool) -> x509.KeyUsage:
    """A KeyUsage extension that grants only the usages named (every other one False)."""
    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
              "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{usage: granted.get(usage, False) for usage in usages})


def parse_san(text: str) -> San:
    """'10.0.0.1', 'fd00::1' -> an IP address SAN; 'db-1.lab' -> a DNS name SAN."""
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not DNS_PATTERN.fullmatch(text) or len(text) > 253:
        raise ValueError(f"not a DNS name or an IP address: {text!r}")
    return x509.DNSName(text.lower())


def parse_request(text: str) -> tuple[str, list[San]]:
    """'NAME=SAN[,SAN...]' -> (NAME, SANs)."""
    name, sep, sans = text.partition("=")
    if not sep or not NAME_PATTERN.fullmatch(name) or name == "ca":
        raise ValueError(f"expected NAME=SAN[,SAN...] with NAME of [A-Za-z0-9._-], not 'ca': {text!r}")
    parsed = list(dict.fromkeys(parse_san(san) for san in sans.split(",") if san))
    if not parsed:
        raise ValueError(f"no SAN for {name!r}")
    return name, parsed


def not_after(cert: x509.Certificate) -> datetime.datetime:
    if hasattr(cert, "not_valid_after_utc"):  # cryptography >= 42
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, with the mode from the start (a key is never readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
    print(f"wrote {path}")


def write_pair(outdir: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write(outdir / f"{name}.key", key_pem, 0o600)
    write(outdir / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_pair(outdir: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The certificate and key OUTDIR/NAME.{crt,key}, if both exist, load, match and are valid > 30 days."""
    crt, key_file = outdir / f"{name}.crt", outdir / f"{name}.key"
    if not (crt.is_file() and key_file.is_file()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or public_der(key.public_key()) != public_der(cert.public_key()):
        return None
    if not_after(cert) - now() <= RENEW_WITHIN:
        return None
    return cert, key


def public_der(key: object) -> bytes:
    """A public key's bytes, to compare keys (cryptography < 41 has no key equality)."""
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    ca_key = ca.public_key()
    if cert.issuer != ca.subject or not isinstance(ca_key, ec.EllipticCurvePublicKey) or cert.signature_hash_algorithm is None:
        return False
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        return False
    return True


def builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int) -> x509.CertificateBuilder:
    start = now() - datetime.timedelta(hours=1)  # tolerates a little clock skew between hosts
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def ensure_ca(outdir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """OUTDIR/ca.crt and ca.key: kept if valid, else made."""
    pair = load_pair(outdir, "ca")
    if pair is not None and [a.value for a in pair[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [LABEL]:
        print(f"kept {outdir / 'ca.crt'}")
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, LABEL), x509.NameAttribute(NameOID.COMMON_NAME, LABEL)])
    cert = (
        builder(name, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_pair(outdir, "ca", cert, key)
    return cert, key


def ensure_cert(outdir: Path, name: str, sans: list[San], ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    """OUTDIR/NAME.crt and NAME.key for these SANs: kept if still right, else made."""
    pair = load_pair(outdir, name)
    if pair is not None and signed_by(pair[0], ca):
        current = pair[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if set(current) == set(sans):
            print(f"kept {outdir / (name + '.crt')}")
            return
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, LABEL), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        builder(subject, ca.subject, key.public_key(), CERT_DAYS)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(digital_signature=True),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_pair(outdir, name, cert, key)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    cli.add_argument("outdir", type=Path, help="directory for ca.crt, ca.key, NAME.crt, NAME.key")
    cli.add_argument("certs", nargs="*", metavar="NAME=SAN[,SAN...]", help="a server certificate to make; SANs are DNS names or IP addresses")
    args = cli.parse_args(argv)
    try:
        requests = dict(parse_request(text) for text in args.certs)
    except ValueError as error:
        cli.error(str(error))
    args.outdir.mkdir(parents=True, exist_ok=True)
    ca, ca_key = ensure_ca(args.outdir)
    for name, sans in requests.items():
        ensure_cert(args.outdir, name, sans, ca, ca_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
