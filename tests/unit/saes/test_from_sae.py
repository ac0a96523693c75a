"""SteeringVector.from_sae: the vector is the decoder column at the SAE's layer, and it steers by alpha × that column."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from psylens.steering.vector import SteeringVector

D_SAE, LAYER = 16, 1


def _sae_folder(tmp_path, d_in: int, layer: int = LAYER, site: str = "resid_post"):
    """An SAE folder in SAELens' layout (cfg.json + sae_weights.safetensors) plus step_sae.json."""
    g = torch.Generator().manual_seed(3)
    w_dec = torch.randn(D_SAE, d_in, generator=g)
    save_file(
        {"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(D_SAE), "b_dec": torch.zeros(d_in)},
        str(tmp_path / "sae_weights.safetensors"),
    )
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d_in, "d_sae": D_SAE}))
    (tmp_path / "step_sae.json").write_text(json.dumps({
        "model": "tiny-llama", "site": site, "layer": layer, "pooling": "delimiter",
        "segmentation": "sentence", "n_train_steps": 100, "arch": "standard",
    }))
    return tmp_path, w_dec


def _hidden(model, enc, layer: int) -> torch.Tensor:
    with torch.no_grad():
        return model.hf_model(**enc, output_hidden_states=True).hidden_states[layer + 1]


def test_from_sae_steers_along_the_decoder_column(tiny_model, tmp_path):
    m = tiny_model("llama")
    folder, w_dec = _sae_folder(tmp_path, m.d_model)
    sv = SteeringVector.from_sae(folder, 5, alpha=3.0)
    assert sv.layers == (LAYER,) and sv.site == "resid_post"        # the layer comes from step_sae.json
    assert torch.equal(sv.vector(LAYER), w_dec[5])
    assert sv.meta["feature"] == 5 and sv.label == f"sae:{folder.name}/5"

    enc = m.tokenizer(["I think she felt hurt."], return_tensors="pt")
    clean = _hidden(m, enc, LAYER)
    with sv.apply(m):
        steered = _hidden(m, enc, LAYER)
    delta = steered - clean                                              # [1, pos, d]
    assert torch.allclose(delta, (3.0 * w_dec[5]).expand_as(delta), atol=1e-5)

    # control: another latent's vector is another direction, and it does not add feature 5's column
    other = SteeringVector.from_sae(folder, 6, alpha=3.0)
    assert not torch.allclose(other.vector(LAYER), w_dec[5])
    with other.apply(m):
        delta_other = _hidden(m, enc, LAYER) - clean
    assert not torch.allclose(delta_other, (3.0 * w_dec[5]).expand_as(delta_other), atol=1e-2)
    assert torch.allclose(delta_other, (3.0 * w_dec[6]).expand_as(delta_other), atol=1e-5)


def test_from_sae_layers_and_errors(tmp_path):
    folder, w_dec = _sae_folder(tmp_path, 32, layer=2)
    sv = SteeringVector.from_sae(folder, 0, layers=[1, 2], alpha=-1.0)
    assert sv.layers == (1, 2) and torch.equal(sv.vectors[0], sv.vectors[1])
    assert sv.deltas()[2].allclose(-w_dec[0])
    with pytest.raises(ValueError, match="out of range: the SAE has 16 latents"):
        SteeringVector.from_sae(folder, 16)
    with pytest.raises(ValueError, match="step_sae.json is missing"):
        SteeringVector.from_sae(tmp_path / "nowhere", 0)
    bad, _ = _sae_folder(tmp_path / "mlp" if (tmp_path / "mlp").mkdir() is None else tmp_path, 32, site="mlp_out")
    with pytest.raises(ValueError, match="cannot be steered"):
        SteeringVector.from_sae(bad, 0)
