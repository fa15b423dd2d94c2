"""The organism codec: probes beat chance on held-out audio; a pitch control vector moves CREPE pitch.

Uses the SAE + probes shipped with the rectified-flow model
(musiclens/assets/organism/flow/cell, trained by `python bench/latent.py --ship`
on the organism codec's latents of the rendered corpus) and the held-out audio
shipped with them (`cell/heldout/`: 4 s of the first four test-split clips of
the bench list, never seen by the SAE or the probes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclens.models.organism import organism_path

CELL = Path(__file__).resolve().parents[2] / "musiclens" / "assets" / "organism" / "flow" / "cell"

pytestmark = [
    pytest.mark.skipif(not (organism_path() / "model.safetensors").exists(),
                       reason="organism weights not trained yet (musiclens/assets/organism/musicgen)"),
    pytest.mark.skipif(not (CELL / "probes.json").exists() or not (CELL / "heldout").is_dir(),
                       reason="latent SAE + probes not shipped yet (python bench/latent.py --ship)"),
]


@pytest.fixture(scope="module")
def cm():
    from musiclens.latent.control import load_control

    from musiclens.errors import MusiclensError

    try:
        return load_control(CELL, "organism")
    except MusiclensError as e:  # the organism's codec was retrained after the cell was shipped
        pytest.skip(str(e))


def test_a_cell_refuses_a_codec_it_was_not_trained_on():
    from musiclens.errors import MusiclensError
    from musiclens.latent.autoencoders import load_autoencoder
    from musiclens.latent.control import load_control

    trained_on = json.loads((CELL.parent / "config.json").read_text()).get("codec_weights_hash")
    if trained_on == load_autoencoder("organism").weights_hash:
        pytest.skip("the shipped cell matches the organism's codec")
    with pytest.raises(MusiclensError, match="was trained on"):
        load_control(CELL, "organism")


@pytest.fixture(scope="module")
def heldout():
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((CELL / "heldout").glob("*.wav"))]
    assert len(clips) == 4
    return clips


def test_probes_beat_chance_on_held_out_audio(cm, heldout):
    from musiclens.latent.labels import frame_values

    xs, ys = [], {"pitch": [], "loudness": [], "timbre": []}
    for y in heldout:
        x = cm.ae.latents(torch.from_numpy(y)[None])[0]
        c = cm.bins.classes(frame_values(y, cm.ae.sample_rate, cm.ae.hop, x.shape[0]))
        xs.append(x)
        for a in ys:
            ys[a].append(c[a])
    f = cm.sae.encode(torch.cat(xs))
    for a in ys:
        y = np.concatenate(ys[a])
        acc = float((cm.probes.logits(f, a).argmax(-1).numpy() == y).mean())
        chance = np.bincount(y).max() / len(y)  # the best constant guess on these very frames
        assert acc > chance, f"{a}: held-out accuracy {acc:.3f} <= chance {chance:.3f}"


def test_pitch_control_vectors_move_crepe_pitch_toward_the_target(cm, heldout):
    from musiclens.latent.control import sweep, target_class

    # the example (--to C5 --alpha 20) raises the pitch of these clips (median MIDI ~61);
    # a C3 vector lowers it. (Far targets at large alpha break down: C6 at alpha 20 lowers it; docs/latent.md.)
    for target, alpha, sign in (("C5", 20.0, 1), ("C3", 10.0, -1)):
        row = sweep(cm, heldout, "pitch", target_class(cm.bins, "pitch", target), [alpha])["alphas"][0]
        # median CREPE pitch of the voiced frames of the decoded audio, averaged over the clips
        assert sign * (row["edited_median_midi"] - row["baseline_median_midi"]) > 0, (target, row)
        assert row["edited_distance"] < row["baseline_distance"], (target, row)
