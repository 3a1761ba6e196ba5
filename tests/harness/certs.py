"""Test certificates made at test time with the openssl command: a private CA and server
certificates it signs, so that a client can verify the chain and still fail on the host name."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIMEOUT = 60


@dataclass
class CertPair:
    cert: str
    key: str


def _openssl(*args: str) -> None:
    res = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=_TIMEOUT)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {res.stderr.strip()}")


def make_ca(directory: os.PathLike, name: str = "nerava-test-ca") -> CertPair:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pair = CertPair(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN={name}", "-keyout", pair.key, "-out", pair.cert)
    os.chmod(pair.key, 0o600)
    return pair


def make_server_cert(directory: os.PathLike, ca: CertPair, common_name: str,
                     dns_names: tuple[str, ...] = ()) -> CertPair:
    """A server certificate for CN=common_name (and subjectAltName DNS entries, if any)
    signed by ca."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stem = common_name.replace("*", "star")
    pair = CertPair(str(d / f"{stem}.crt"), str(d / f"{stem}.key"))
    csr = d / f"{stem}.csr"
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}",
             "-keyout", pair.key, "-out", str(csr))
    args = ["x509", "-req", "-in", str(csr), "-CA", ca.cert, "-CAkey", ca.key,
            "-CAcreateserial", "-days", "1", "-out", pair.cert]
    if dns_names:
        ext = d / f"{stem}.ext"
        ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in dns_names) + "\n")
        args += ["-extfile", str(ext)]
    _openssl(*args)
    os.chmod(pair.key, 0o600)
    return pair
