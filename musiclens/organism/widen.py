"""Widening a trained codec without changing what it computes.

Why: the shipped decoder (16 filters) has stopped improving on its own
losses (docs/organism.md, "The decoder stage"), and a wider codec trained
from scratch gives new codes, so the language model and its fine-tuning
would have to be retrained on them (hours of CPU). Widening keeps the codes:
every channel of the old codec keeps its weights and reads only old
channels, so encoder, codebooks and decoder compute exactly what they did.
The new channels read everything (fresh random weights), and their
outgoing weights into old channels start at zero. The first optimiser step
then gives those a gradient, so the decoder stage can train the extra
width from the old decoder's quality, while the frozen encoder keeps
producing the codes the LM was trained on.

The result is a standard HF `EncodecModel` with a larger `num_filters`, so
it installs into a MusicGen export like any other codec (`polish.install_codec`).
The encoder's new channels are wasted compute: HF builds encoder and decoder
from one `num_filters`, and only the decoder is trained.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import MusiclensError


@torch.no_grad()
def _widen_conv(old: nn.Module, new: nn.Module) -> None:
    w_old, w_new = old.weight.detach(), new.weight.detach().clone()
    if isinstance(old, nn.ConvTranspose1d):  # weight is [in, out, k]
        i, o = w_old.shape[:2]
        w_new[:i, :o] = w_old
        w_new[i:, :o] = 0.0
    else:  # [out, in, k]
        o, i = w_old.shape[:2]
        w_new[:o, :i] = w_old
        w_new[:o, i:] = 0.0
    new.weight = w_new  # through weight norm's right inverse: g = per-row norm, v = w_new
    if old.bias is not None:
        new.bias[: old.bias.shape[0]] = old.bias


@torch.no_grad()
def _widen_lstm(old: nn.LSTM, new: nn.LSTM) -> None:
    h, h2 = old.hidden_size, new.hidden_size
    for name, w_old in old.named_parameters():
        w_new = getattr(new, name)
        for gate in range(4):  # PyTorch stacks the i, f, g, o gates along dim 0
            rows_old, rows_new = slice(gate * h, (gate + 1) * h), slice(gate * h2, gate * h2 + h)
            if w_old.dim() == 1:
                w_new[rows_new] = w_old[rows_old]
            else:
                n_in = w_old.shape[1]
                w_new[rows_new, :n_in] = w_old[rows_old]
                w_new[rows_new, n_in:] = 0.0


def widen_codec(codec, num_filters: int, seed: int = 0):
    """A copy of the HF `EncodecModel` `codec` with `num_filters` filters that computes the same codes and audio.

    New channels get fresh random weights (seeded); their effect on the old
    channels starts at exactly zero (see the module docstring).
    """
    from transformers import EncodecModel

    old_f = codec.config.num_filters
    if num_filters < old_f:
        raise MusiclensError(f"a codec can only be widened: it has {old_f} filters, asked for {num_filters}")
    if codec.config.norm_type != "weight_norm":  # time_group_norm would need its groups widened too
        raise MusiclensError(f"widening supports weight-normed codecs only, not norm_type {codec.config.norm_type!r}")
    cfg = copy.deepcopy(codec.config)
    cfg.num_filters = num_filters
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = EncodecModel(cfg)
    device = next(codec.parameters()).device
    wide = wide.to(device)
    done: set[str] = set()
    old_mods, new_mods = dict(codec.named_modules()), dict(wide.named_modules())
    for name, old in old_mods.items():
        new = new_mods[name]
        if isinstance(old, (nn.Conv1d, nn.ConvTranspose1d)):
            _widen_conv(old, new)
        elif isinstance(old, nn.LSTM):
            _widen_lstm(old, new)
        else:
            continue
        done.add(name + ".")
    # everything else (the codebooks' buffers) has the same shape: copy it as it is
    new_state = wide.state_dict()
    for key, value in codec.state_dict().items():
        if not any(key.startswith(prefix) for prefix in done):
            if new_state[key].shape != value.shape:
                raise MusiclensError(f"cannot widen {key}: shape {tuple(value.shape)} -> {tuple(new_state[key].shape)}")
            new_state[key].copy_(value)
    return wide.train(codec.training)
