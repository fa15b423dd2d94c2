"""SAELens-layout save/load: identical outputs, foreign configs, hook-name mapping, sae_lens interop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from musiclens.errors import MusiclensError
from musiclens.sae import SAE, SAEConfig, load_sae, write_sae_files


def _random_sae(arch: str, d: int = 16, expansion: int = 4, k: int | None = 4, seed: int = 0) -> SAE:
    cfg = SAEConfig(d_in=d, d_sae=d * expansion, architecture=arch, k=k if arch in ("topk", "batchtopk") else None,
                    hook_name="layer.3", model_name="tiny-random",
                    l1_coefficient=0.05 if arch == "rmsnorm_l1" else None)
    sae = SAE(cfg)
    g = torch.Generator().manual_seed(seed)
    sae.init_weights(generator=g, b_dec=torch.randn(d, generator=g) * 0.1)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.enc_weight.add_(0.3 * torch.randn(sae.enc_weight.shape, generator=g))
        if sae.threshold is not None:
            sae.threshold.fill_(0.2)
    return sae


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "rmsnorm_l1"])
def test_save_load_identical(tmp_path, arch):
    sae = _random_sae(arch)
    write_sae_files(sae, tmp_path / "s")
    loaded = load_sae(tmp_path / "s")
    assert loaded.cfg.architecture == arch and loaded.cfg.hook_name == "layer.3" and loaded.cfg.k == sae.cfg.k
    x = torch.randn(64, 16) * 3
    h1, r1 = sae(x)
    h2, r2 = loaded(x)
    assert torch.equal(h1, h2) and torch.equal(r1, r2)
    assert (h1 > 0).any()
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["d_in"] == 16 and cfg["d_sae"] == 64 and cfg["metadata"]["hook_name"] == "layer.3"
    assert cfg["architecture"] == {"topk": "topk", "batchtopk": "jumprelu", "rmsnorm_l1": "standard"}[arch]
    assert cfg["normalize_activations"] == ("constant_norm_rescale" if arch == "rmsnorm_l1" else "none")


def test_rmsnorm_decode_restores_scale():
    """Edits in latent space decode at the input row's own scale (normalisation undone on decode)."""
    sae = _random_sae("rmsnorm_l1")
    x = torch.randn(8, 16)
    big = x * 100
    r_small = sae(x)[1]
    r_big = sae(big)[1]
    assert torch.allclose(r_big, r_small * 100, rtol=1e-4, atol=1e-4)
    xn, stats = sae.normalize(big)
    h = sae.encode_normalized(xn)
    h[:, 0] += 5.0
    edited = sae.decode(h, stats)
    assert torch.allclose(edited, sae.edit(big, lambda f: f + torch.nn.functional.one_hot(
        torch.zeros(8, dtype=torch.long), sae.d_sae).float() * 5.0), atol=1e-4)
    assert torch.allclose(edited - r_big, 5.0 * stats[1] * sae.W_dec[0], atol=1e-3)


def test_loads_saelens_v5_topk_with_published_hook_names(tmp_path):
    """An old-format SAELens TopK checkpoint (activation_fn_str topk, hook_layers.<i>, decoder-norm rescaling)."""
    d, S, k = 8, 32, 3
    g = torch.Generator().manual_seed(1)
    W_enc, W_dec = torch.randn(d, S, generator=g), torch.randn(S, d, generator=g) * 2
    b_enc, b_dec = torch.randn(S, generator=g) * 0.1, torch.randn(d, generator=g) * 0.1
    (tmp_path / "p").mkdir()
    save_file({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec},
              str(tmp_path / "p" / "sae_weights.safetensors"))
    (tmp_path / "p" / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": d, "d_sae": S, "dtype": "float32", "model_name": "facebook/musicgen-small",
        "hook_name": "hook_layers.11", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": k},
        "apply_b_dec_to_input": True, "normalize_activations": "none", "rescale_acts_by_decoder_norm": True,
        "context_size": 1500}))
    sae = load_sae(tmp_path / "p")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == k and sae.cfg.hook_name == "layer.11"
    x = torch.randn(20, d, generator=g)
    # SAELens maths: rank pre·‖W_dec‖, decode acts·W_dec/‖W_dec‖
    n = W_dec.norm(dim=1)
    pre = ((x - b_dec) @ W_enc + b_enc) * n
    v, i = pre.topk(k, dim=-1)
    h = torch.zeros(20, S).scatter(-1, i, v.relu())
    ref = (h / n) @ W_dec + b_dec
    assert torch.allclose(sae(x)[1], ref, atol=1e-4)


def test_bad_sae_dirs(tmp_path):
    with pytest.raises(MusiclensError, match="no cfg.json"):
        load_sae(tmp_path)
    sae = _random_sae("topk")
    write_sae_files(sae, tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["d_sae"] = 65
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MusiclensError, match="shape"):
        load_sae(tmp_path / "s")
    cfg["d_sae"], cfg["architecture"] = 64, "gated"
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MusiclensError, match="unsupported SAE architecture"):
        load_sae(tmp_path / "s")
    cfg["architecture"], cfg["k"] = "topk", 64
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MusiclensError, match="smaller than"):
        load_sae(tmp_path / "s")


def _saelens_python() -> str | None:
    try:
        import sae_lens  # noqa: F401

        return sys.executable
    except ImportError:
        p = os.environ.get("MUSICLENS_SAELENS_PYTHON")
        return p if p and shutil.which(p) else None


def test_sae_lens_loads_our_saes(tmp_path):
    """Optional: sae_lens (in this env, or the python in MUSICLENS_SAELENS_PYTHON) gives our latents and
    reconstructions for TopK, BatchTopK (as JumpReLU) and RMSNorm-L1 (as constant_norm_rescale) SAEs."""
    py = _saelens_python()
    if py is None:
        pytest.skip("sae_lens is not installed (set MUSICLENS_SAELENS_PYTHON to a python that has it)")
    x = torch.randn(32, 16) * 2
    cases = {}
    for arch in ("topk", "batchtopk", "rmsnorm_l1"):
        sae = _random_sae(arch)
        write_sae_files(sae, tmp_path / arch)
        h, r = sae(x)
        cases[str(tmp_path / arch)] = {"h": h.detach(), "r": r.detach()}
    torch.save({"x": x, "cases": cases}, tmp_path / "io.pt")
    script = (
        "import sys, torch\n"
        "from sae_lens import SAE\n"
        "d = torch.load(sys.argv[1])\n"
        "for path, want in d['cases'].items():\n"
        "    s = SAE.load_from_disk(path)\n"
        "    h = s.encode(d['x']); r = s.decode(h)\n"
        "    assert torch.allclose(h, want['h'], atol=1e-4), (path, (h - want['h']).abs().max())\n"
        "    assert torch.allclose(r, want['r'], atol=1e-4), (path, (r - want['r']).abs().max())\n"
        "    print('ok', type(s).__name__)\n")
    res = subprocess.run([py, "-c", script, str(tmp_path / "io.pt")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["ok", "TopKSAE", "ok", "JumpReLUSAE", "ok", "StandardSAE"]
