"""The clients' options come from one table, and a password in base_url is never shown nor
silently swapped for the API key."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from qwen3_vllm_rerank import AsyncRerankClient, InvalidInput, RerankClient
from qwen3_vllm_rerank.client import API_KEY_ENV
from qwen3_vllm_rerank.client._options import ClientOptions, option_default, option_doc, option_names

CLIENTS = [RerankClient, AsyncRerankClient]
ONLY_THE_CLIENTS_HAVE = {"http_client"}


@pytest.mark.parametrize("client", CLIENTS)
def test_the_signature_is_the_option_table_plus_http_client(client: type) -> None:
    parameters = dict(inspect.signature(client.__init__).parameters)
    del parameters["self"]
    assert set(parameters) == set(option_names()) | ONLY_THE_CLIENTS_HAVE
    for name in option_names():
        assert parameters[name].default is option_default(name), name
        assert getattr(ClientOptions, name) is option_default(name), name


@pytest.mark.parametrize("client", CLIENTS)
def test_the_class_docstring_lists_every_option_doc(client: type) -> None:
    doc = " ".join((client.__doc__ or "").split())  # rewrapped: compare the words
    assert "Args:" in doc
    for name in [*option_names(), *ONLY_THE_CLIENTS_HAVE]:
        assert f"{name}:" in doc, name
    for name in option_names():
        assert f"{name}: {' '.join(option_doc(name).split())}" in doc, name


def test_every_option_is_documented_in_a_paragraph() -> None:
    for name in option_names():
        doc = option_doc(name)
        assert doc, name
        assert doc == textwrap.dedent(doc).strip(), name
        assert "\n" not in doc, name
    with pytest.raises(KeyError):
        option_doc("top_n")  # an adapter-only option is not in the shared table


@pytest.mark.parametrize("client", CLIENTS)
def test_userinfo_with_an_api_key_is_refused_without_showing_the_password(client: type) -> None:
    with pytest.raises(InvalidInput, match="Use one of them") as raised:
        client("http://svc:hunter2@127.0.0.1:8000", api_key="sk-test")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(InvalidInput, match="user:password@"):
        client(["http://127.0.0.1:8001", "http://svc:hunter2@127.0.0.1:8000"], api_key="sk-test")


def test_userinfo_with_an_api_key_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sk-from-env")
    with pytest.raises(InvalidInput, match=API_KEY_ENV):
        RerankClient("http://svc:hunter2@127.0.0.1:8000")


@pytest.mark.parametrize("client", CLIENTS)
def test_the_repr_never_shows_the_password(client: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    instance = client("http://svc:hunter2@127.0.0.1:8000,http://127.0.0.1:8001", model="m")
    shown = repr(instance)
    assert "hunter2" not in shown
    assert "127.0.0.1:8000" in shown
    assert "127.0.0.1:8001" in shown
    assert "'m'" in shown
    assert instance.base_urls[0] == "http://svc:hunter2@127.0.0.1:8000"  # still used as given
