"""SECURE_PROXY_SSL_HEADER is a switch like the others (finding 11).

`SECURE_PROXY_SSL_HEADER=false` used to turn proxy trust on. Replayed against
a real uvicorn with HTTPS on: a client that claims `X-Forwarded-Proto: https`
is trusted (no redirect to HTTPS) only when the switch is really on.
"""

import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def serve(start_server, value: str):
    # uvicorn itself believes X-Forwarded-Proto from 127.0.0.1 unless told
    # not to; off here, so what is tested is Django's setting alone.
    return start_server(
        "--no-proxy-headers", env={"HTTPS": "true", "SECURE_PROXY_SSL_HEADER": value}
    )


def claims_https_and_is_believed(server) -> bool:
    response = httpx.get(
        f"{server.url}/admin/login/", headers={"X-Forwarded-Proto": "https"}, timeout=10
    )
    # Not believed: SECURE_SSL_REDIRECT sends it to https:// first.
    assert response.status_code in (200, 301), response.status_code
    return response.status_code == 200


@pytest.mark.parametrize("value", ["false", "0", "no", "off", "FALSE", ""])
def test_a_false_value_does_not_trust_the_proxy(start_server, value):
    server = serve(start_server, value)
    assert not claims_https_and_is_believed(server)


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_a_true_value_trusts_the_proxy(start_server, value):
    server = serve(start_server, value)
    assert claims_https_and_is_believed(server)


@pytest.mark.parametrize("value", ["maybe", "https", "X-Forwarded-Proto"])
def test_a_value_neither_true_nor_false_stops_start_up_in_one_line(value):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "SECRET_KEY": "insecure-test-only-key",
            "SECURE_PROXY_SSL_HEADER": value,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SECURE_PROXY_SSL_HEADER" in lines[0], result.stderr
