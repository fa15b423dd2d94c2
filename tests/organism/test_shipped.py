"""The shipped organism: loads offline both ways, is small, and generates audio."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from musiclens.models import organism as O


def test_shipped_folder_is_complete_and_small():
    folder = O.organism_path()
    for name in ("config.json", "generation_config.json", "model.safetensors", "README.md"):
        assert (folder / name).exists(), name
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 60e6
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("text_encoder.") for k in keys)
    assert any(k.startswith("audio_encoder.quantizer") for k in keys)


def test_model_card_matches_the_shipped_logs_and_bench_results():
    # the card is written from training/ and bench/results/organism*.json; re-running a bench
    # without rewriting the card (musiclens.organism.card.write_card) leaves stale figures
    from musiclens.organism.card import card_text

    folder = O.organism_path()
    assert (folder / "README.md").read_text() == card_text(folder), \
        "stale model card: python -c 'from musiclens.organism.card import write_card; write_card()'"
    # every table row has as many cells as its header
    table: list[str] = []
    for line in (folder / "README.md").read_text().splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            widths = {row.replace("\\|", "").count("|") for row in table}
            assert len(widths) == 1, f"ragged table in the model card: {table[0]}"
        table = []
    # the shipped LM trained on a GPU (its progress.json says so): the card gives the device-call recipe
    progress = json.loads((folder / "training" / "lm_progress.json").read_text())
    card = card_text(folder)
    assert progress["device"].startswith("cuda") and "bash tools/device_lm.sh" in card
    assert f"on one {progress['machine']['gpu']}" in card


def test_loads_offline_both_ways_and_generates():
    from transformers import BertModel, MusicgenForConditionalGeneration

    model, tok = O.load_organism_hf()
    assert model.config.decoder.num_hidden_layers >= 8
    assert model.config.audio_encoder.sampling_rate == O.SAMPLE_RATE
    assert float(model.audio_encoder.quantizer.layers[0].codebook.embed.abs().sum()) > 0
    # plain transformers + the MiniLM package (the recipe of the model card)
    plain = MusicgenForConditionalGeneration.from_pretrained(O.organism_path())
    plain.text_encoder.load_state_dict(BertModel.from_pretrained(O.minilm_path()).state_dict())
    for a, b in zip(model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    inputs = tok(["a fast bright trumpet tune with a rock beat", "a slow dark organ chorale"],
                 return_tensors="pt", padding=True)
    inputs.pop("token_type_ids", None)
    torch.manual_seed(0)
    audio = model.generate(**inputs, max_new_tokens=30, do_sample=True, guidance_scale=3.0)
    assert audio.shape[0] == 2 and audio.shape[-1] >= 20 * 320
    assert torch.isfinite(audio).all() and float(audio.abs().max()) > 1e-4


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "musiclens", "organism", "train", "--corpus", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "musiclens", "organism", "export", "--run", str(tmp_path / "none"),
                        "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "no LM export" in r.stderr


def test_generation_reads_the_sequence_the_lm_was_trained_on():
    """The organism's greedy generation = the argmax of a teacher-forced pass over its codes laid out as lm.py trains.

    The LM is trained teacher-forced on `lm.delay_pattern` sequences and measured that way (the caption gaps,
    the beat-splice test); this pins that sampling sees the same layout and positions.
    """
    from musiclens import load_model
    from musiclens.organism.lm import delay_pattern

    cap = "a fast organ tune with a rock beat"
    model = load_model("organism")
    res = model.generate([cap], seconds=0.8, seed=0, guidance_scale=1.0, do_sample=False)
    ids = delay_pattern(res.codes, model.pad_token_id)[0]  # [K, F + K], the training layout
    assert torch.equal(ids, model.decoder_input_ids(res.codes))  # = what generate() builds
    pred = model.forward_codes(ids, captions=[cap]).argmax(-1)[0]  # [K, F + K]
    frames = res.codes.shape[-1]
    assert frames == 40
    for k in range(model.n_codebooks):  # codebook k's frame f is predicted at position f + k
        assert torch.equal(pred[k, k: k + frames], res.codes[0, k])
