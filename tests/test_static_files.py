"""`collectstatic`, then the pages name hashed files and the server serves them.

The README's deployment step, run for real: collectstatic into a fresh
STATIC_ROOT, a uvicorn server started with it, its pages fetched over HTTP.
"""

import re
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

HASHED = re.compile(r"""(?:src|href)="(/static/[^"]+\.[0-9a-f]{12}\.(?:css|js))\"""")


def test_collectstatic_then_hashed_names_are_served(tmp_path, start_server, personas):
    from django.test import Client

    static_root = tmp_path / "static"
    env = {"STATIC_ROOT": str(static_root)}
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr
    assert (static_root / "staticfiles.json").exists()

    server = start_server(env=env)
    django_client = Client()
    django_client.force_login(personas["bob"])
    cookies = {"sessionid": django_client.cookies["sessionid"].value}
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=20) as http:
        page = http.get("/")
        assert page.status_code == 200
        names = HASHED.findall(page.text)
        ours = [name for name in names if "/static/taskrunner/" in name]
        assert ours, f"no hashed taskrunner asset on the dashboard: {names}"
        for name in names:
            answer = http.get(name)
            assert answer.status_code == 200, name
            # Hashed names never change: cached for good.
            assert "immutable" in answer.headers.get("cache-control", ""), name
            compressed = http.get(name, headers={"Accept-Encoding": "gzip"})
            assert compressed.headers.get("content-encoding") == "gzip", name
