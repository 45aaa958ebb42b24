"""Fixtures of the API tests: a uvicorn server, tokens and sessions per persona, tasks."""

import secrets
import sys

import pytest
from api_helpers import SERVER_ENV, client


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Personas are created with a fast hasher: PBKDF2 would cost seconds per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api(start_server):
    return start_server(env=SERVER_ENV)


@pytest.fixture
def tokens(personas):
    from taskrunner.models import ApiToken

    return {name: ApiToken.create_for(user)[1] for name, user in personas.items()}


@pytest.fixture
def session_cookies(personas):
    """name -> cookies of a logged-in session (and a CSRF cookie) for each persona."""
    from django.test import Client

    result = {}
    for name, user in personas.items():
        django_client = Client()
        django_client.force_login(user)
        csrf = secrets.token_hex(16)  # a 32-character CSRF secret, as Django makes them
        result[name] = {
            "sessionid": django_client.cookies["sessionid"].value,
            "csrftoken": csrf,
        }
    return result


@pytest.fixture
def as_user(api, tokens):
    """name -> httpx client with that persona's bearer token."""
    clients = {name: client(api.url, token) for name, token in tokens.items()}
    yield clients
    for c in clients.values():
        c.close()


@pytest.fixture
def make_task(transactional_db):
    from taskrunner.models import Task
    from taskrunner.params import normalize_declaration

    def make(name: str = "demo", argv: list[str] | None = None, **fields):
        fields["params"] = normalize_declaration(fields.get("params", []))
        return Task.objects.create(
            name=name,
            argv=argv or [sys.executable, "-c", "print('hi')"],
            **fields,
        )

    return make
