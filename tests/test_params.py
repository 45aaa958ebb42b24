import pytest

from taskrunner.params import ParamError, normalize_declaration, resolve, substitute

DECL = normalize_declaration(
    [
        {"name": "region", "choices": ["eu", "us"], "default": "eu"},
        {"name": "count", "type": "int"},
        {"name": "dry", "type": "bool", "default": False},
        {"name": "ratio", "type": "float", "default": 0.5},
    ]
)


def test_defaults_filled_and_text_converted():
    assert resolve(DECL, {"count": "3", "dry": "true"}) == {
        "region": "eu",
        "count": 3,
        "dry": True,
        "ratio": 0.5,
    }


def test_every_bad_parameter_is_named():
    with pytest.raises(ParamError) as info:
        resolve(DECL, {"region": "mars", "count": "x", "nope": 1})
    assert set(info.value.errors) == {"region", "count", "nope"}


def test_missing_required():
    with pytest.raises(ParamError) as info:
        resolve(DECL, {})
    assert info.value.errors == {"count": "required"}


def test_declaration_refuses_bad_default():
    with pytest.raises(ParamError):
        normalize_declaration([{"name": "n", "type": "int", "default": "many"}])


def test_substitute_whole_elements_only():
    argv = ["echo", "{region}", "x{region}", "{dry}", "{unknown}"]
    values = {"region": "eu; rm -rf /", "dry": False}
    assert substitute(argv, values) == ["echo", "eu; rm -rf /", "x{region}", "false", "{unknown}"]


@pytest.mark.django_db
def test_a_task_saved_without_clean_stores_its_full_declaration():
    from taskrunner.models import Task

    task = Task.objects.create(name="raw", argv=["true"], params=[{"name": "n", "type": "int"}])
    task.refresh_from_db()
    assert task.params == [
        {"name": "n", "type": "int", "default": None, "required": True, "choices": None}
    ]
    with pytest.raises(ParamError):
        task.resolve_params({})
    assert task.resolve_params({"n": "4"}) == {"n": 4}
