"""The NDIF path (``remote=True``) without a network: the request nnsight would send is built
and captured, and an in-process stand-in for the server runs the serialized request on a
local copy of the model, so the whole round trip is checked against a local harvest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("nnsight")
import nnsight.modeling.huggingface as nn_hf  # noqa: E402
from nnsight.intervention.backends.remote import RemoteBackend  # noqa: E402
from nnsight.schema.request import RequestModel  # noqa: E402

from psylens.harvest import build_remote_trace, encode  # noqa: E402
from psylens.models import load_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

CANONICAL = "psylens-test/tiny-llama"
TEXTS = ["I lost my keys at the station.", "Hello", "We ate soup together"]


class _Captured(Exception):
    """Raised by the fake transport once the request is built: nothing is sent."""


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir  # tests/conftest.py: read-only, shared by the session


@pytest.fixture
def offline_id(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # nnsight canonicalises the model id through the Hub (cached in _ID_CACHE); seed the
    # cache so the model key can be built offline.
    repo = str(model_dir)
    monkeypatch.setitem(nn_hf._ID_CACHE, repo, CANONICAL)
    return repo


@pytest.fixture(scope="module")
def server(model_dir: Path, smollm_tokenizer) -> Any:
    """What NDIF would host: the same checkpoint, loaded with real weights."""
    from nnsight import LanguageModel

    return LanguageModel(str(model_dir), tokenizer=smollm_tokenizer, dispatch=True)


def _fake_ndif(server: Any, log: list[Any]):
    """A ``RemoteBackend.request`` that runs the serialized request here, as NDIF would."""

    def request(self: RemoteBackend, req: RequestModel, tracer: Any) -> dict[str, Any]:
        blob = RequestModel.serialize(tracer, self.compress)
        log.append((req, blob))
        restored = RequestModel.deserialize(blob, server._remoteable_persistent_objects(), compress=self.compress)
        frame = restored.info.frame  # fresh copies of the captured locals, as on the server
        before = dict(frame.f_locals)
        restored.execute(restored.info.code)
        # the server sends back what the block bound and saved
        return {k: v for k, v in frame.f_locals.items() if k not in before or before[k] is not v}

    return request


def _remote_trace(repo: str, tokenizer: Any, sites: list[str], layers: list[int]) -> dict[str, torch.Tensor]:
    from psylens._nnsight import remote_resid_trace

    return remote_resid_trace(repo, tokenizer, TEXTS[:2], sites, layers)


def test_request_is_built(offline_id: str, smollm_tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def capture(self: RemoteBackend, req: RequestModel, tracer: Any) -> None:
        seen.update(request=req, backend=self, blob=RequestModel.serialize(tracer, self.compress))
        raise _Captured

    def no_network(*a: Any, **k: Any) -> None:
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(RemoteBackend, "request", capture)
    monkeypatch.setattr(RemoteBackend, "_post", no_network)
    with pytest.raises(_Captured):
        _remote_trace(offline_id, smollm_tokenizer, ["resid_post"], [0, 2])
    req, backend = seen["request"], seen["backend"]
    assert isinstance(req, RequestModel)
    assert CANONICAL in req.model_key and "TransformersModel" in req.model_key
    assert backend.model_key == req.model_key and backend.blocking
    assert backend.host.startswith(("http://", "https://"))
    assert isinstance(seen["blob"], bytes) and len(seen["blob"]) > 100


def test_round_trip_through_a_stand_in_server(
    offline_id: str, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[Any] = []
    monkeypatch.setattr(RemoteBackend, "request", _fake_ndif(server, log))
    m = load_model(offline_id, device="cpu")
    layers = [0, 1]
    got = build_remote_trace(m, TEXTS, ["resid_post", "resid_pre"], [1, 0], format="raw")  # any order
    assert len(log) == 1 and CANONICAL in log[0][0].model_key
    local = m.harvest(TEXTS, sites=["resid_pre", "resid_post"], layers=layers, format="raw", batch_size=1, progress=False)
    for site in ("resid_pre", "resid_post"):
        assert got[site].shape == (len(TEXTS), len(layers), m.d_model)
        torch.testing.assert_close(got[site], local[site], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got["resid_pre"], got["resid_post"])


def test_harvest_remote_matches_local(offline_id: str, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[Any] = []
    monkeypatch.setattr(RemoteBackend, "request", _fake_ndif(server, log))
    m = load_model(offline_id, device="cpu")
    remote = m.harvest(TEXTS, layers=[0, 2], backend="nnsight", remote=True, batch_size=2, progress=False)
    assert len(log) == 2  # one request per batch
    local = m.harvest(TEXTS, layers=[0, 2], batch_size=1, progress=False)
    assert remote.ids == local.ids and remote.layers == [0, 2] and remote.meta["remote"] is True
    torch.testing.assert_close(remote["resid_post"], local["resid_post"], rtol=1e-4, atol=1e-4)
    # the chat-formatted text is cut at the user's last word before it is sent
    assert encode(m, TEXTS[0]).ids[-1] != m.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_remote_limits(tiny_model) -> None:
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="resid_pre and resid_post"):
        build_remote_trace(m, TEXTS, ["mlp_out"], [0])
    with pytest.raises(ValueError, match="out of range"):
        build_remote_trace(m, TEXTS, ["resid_post"], [7])
    with pytest.raises(ValueError, match="positions='last'"):
        m.harvest(TEXTS, backend="nnsight", remote=True, positions="mean", progress=False)
    with pytest.raises(ValueError, match="nnsight"):
        m.harvest(TEXTS, remote=True, progress=False)


class _BosTokenizer:
    """Adds BOS to every text, like Gemma's and Llama's tokenizers."""

    bos_token, bos_token_id = "<bos>", 2

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [2] + [10 + ord(c) for c in text]}


def test_remote_prompts_never_carry_two_bos(smollm_tokenizer) -> None:
    from psylens._nnsight import strip_added_bos

    tok = _BosTokenizer()
    templated = "<bos><start_of_turn>user\nHi<end_of_turn>\n"
    assert strip_added_bos(templated, tok) == "<start_of_turn>user\nHi<end_of_turn>\n"  # the server adds it back
    assert strip_added_bos("Hi <bos>", tok) == "Hi <bos>"  # only a leading one
    # a tokenizer that adds no BOS (SmolLM2) keeps the template's text as it is
    text = smollm_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert strip_added_bos(text, smollm_tokenizer) == text
    no_bos = type("T", (), {"bos_token": None, "bos_token_id": None})()
    assert strip_added_bos("<bos>x", no_bos) == "<bos>x"
