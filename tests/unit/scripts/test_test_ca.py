# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""scripts/test_ca.py: the TEST certificate authority of the tests and the lab."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO_ROOT, "scripts", "test_ca.py")
_spec = importlib.util.spec_from_file_location("test_ca_script", SCRIPT)
test_ca = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_ca)

LABEL = "cynic.cluster TEST CA — not for production"


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert):
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def verify(ca, cert, san):
    """Chain and name checked the way TLS clients do (cryptography's web PKI verifier)."""
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(san)
    verifier.verify(cert, [])


def run(capsys, *args):
    assert test_ca.main([str(a) for a in args]) == 0
    return capsys.readouterr().out.splitlines()


def test_writes_a_ca_and_server_certificates(tmp_path, capsys):
    out = run(capsys, tmp_path, "db=10.0.0.5,fd00::5,DB-1.Lab", "lb=lb.lab")
    assert sorted(out) == sorted("wrote %s" % (tmp_path / f) for f in ("ca.key", "ca.crt", "db.key", "db.crt", "lb.key", "lb.crt"))
    for name in ("ca", "db", "lb"):
        assert stat.S_IMODE(os.stat(tmp_path / (name + ".key")).st_mode) == 0o600
    ca, db = load(tmp_path / "ca.crt"), load(tmp_path / "db.crt")

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == LABEL
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for cert in (ca, db):
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == LABEL
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    assert db.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db"
    assert db.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(db.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert db.not_valid_after_utc - db.not_valid_before_utc == datetime.timedelta(days=825)
    assert sans(db) == [
        x509.IPAddress(ipaddress.IPv4Address("10.0.0.5")),
        x509.IPAddress(ipaddress.IPv6Address("fd00::5")),
        x509.DNSName("db-1.lab"),
    ]

    for san in sans(db):
        verify(ca, db, san)
    with pytest.raises(VerificationError):
        verify(ca, db, x509.DNSName("lb.lab"))  # the other certificate's name
    verify(ca, load(tmp_path / "lb.crt"), x509.DNSName("lb.lab"))


def test_rerun_keeps_everything_that_is_still_right(tmp_path, capsys):
    run(capsys, tmp_path, "db=10.0.0.5,db-1.lab")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # Same SANs in another order and case: nothing changes.
    assert run(capsys, tmp_path, "db=DB-1.lab,10.0.0.5") == ["kept %s" % (tmp_path / "ca.crt"), "kept %s" % (tmp_path / "db.crt")]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # A new name: only its files are written.
    assert run(capsys, tmp_path, "db=10.0.0.5,db-1.lab", "lb=lb.lab")[-2:] == ["wrote %s" % (tmp_path / "lb.key"), "wrote %s" % (tmp_path / "lb.crt")]
    assert (tmp_path / "db.crt").read_bytes() == before["db.crt"] and (tmp_path / "ca.key").read_bytes() == before["ca.key"]


def test_changed_sans_reissue_the_certificate_and_keep_the_ca(tmp_path, capsys):
    run(capsys, tmp_path, "db=10.0.0.5")
    ca_before, key_before = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "db.key").read_bytes()
    out = run(capsys, tmp_path, "db=10.0.0.5,10.0.0.6")
    assert out == ["kept %s" % (tmp_path / "ca.crt"), "wrote %s" % (tmp_path / "db.key"), "wrote %s" % (tmp_path / "db.crt")]
    assert (tmp_path / "ca.crt").read_bytes() == ca_before and (tmp_path / "db.key").read_bytes() != key_before
    assert len(sans(load(tmp_path / "db.crt"))) == 2


def test_a_certificate_expiring_within_30_days_is_reissued(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(test_ca, "CERT_DAYS", 29)
    run(capsys, tmp_path, "db=db-1.lab")
    monkeypatch.setattr(test_ca, "CERT_DAYS", 31)  # 31 days from now minus the hour of skew allowance: still kept
    run(capsys, tmp_path, "short=db-1.lab")
    monkeypatch.undo()
    out = run(capsys, tmp_path, "db=db-1.lab", "short=db-1.lab")
    assert "wrote %s" % (tmp_path / "db.crt") in out and "kept %s" % (tmp_path / "short.crt") in out
    db = load(tmp_path / "db.crt")
    assert db.not_valid_after_utc - db.not_valid_before_utc == datetime.timedelta(days=825)


def test_a_new_ca_reissues_every_certificate(tmp_path, capsys):
    run(capsys, tmp_path, "db=db-1.lab")
    (tmp_path / "ca.key").unlink()
    out = run(capsys, tmp_path, "db=db-1.lab")
    assert out[:2] == ["wrote %s" % (tmp_path / "ca.key"), "wrote %s" % (tmp_path / "ca.crt")]
    assert "wrote %s" % (tmp_path / "db.crt") in out
    verify(load(tmp_path / "ca.crt"), load(tmp_path / "db.crt"), x509.DNSName("db-1.lab"))


def test_a_key_that_does_not_match_its_certificate_is_replaced(tmp_path, capsys):
    run(capsys, tmp_path, "db=db-1.lab", "lb=lb.lab")
    (tmp_path / "db.key").write_bytes((tmp_path / "lb.key").read_bytes())
    assert "wrote %s" % (tmp_path / "db.crt") in run(capsys, tmp_path, "db=db-1.lab")


@pytest.mark.parametrize("bad", ["db", "ca=ca.lab", "db=", "db=not a name", "../x=db.lab", "db=-bad.lab"])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, bad):
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "pki"), bad], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and not (tmp_path / "pki").exists()


def test_runs_as_a_program(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path), "db=127.0.0.1"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "wrote %s" % (tmp_path / "db.crt")
