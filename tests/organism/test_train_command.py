"""`musiclens organism train|export` end to end on a tiny corpus (real classes, tiny step counts)."""

from __future__ import annotations

import json

from musiclens.cli import main
from musiclens.models import organism as O


def test_train_all_stages_then_resume_and_export(tiny_corpus, tmp_path):
    run, dst = tmp_path / "run", tmp_path / "ship"
    args = ["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--codec-steps", "2",
            "--codec-batch-size", "2", "--decoder-steps", "2", "--lm-steps", "2", "--lm-batch-size", "2", "--lm-layers", "1",
            "--lm-d-model", "32", "--tune-steps", "2", "--codes-seconds", "1.0", "--device", "cpu"]
    assert main(args) == 0
    for f in ("codec/hf/config.json", "decoder/hf/config.json", "codes/codes.safetensors", "lm/hf/model.safetensors", "tune/hf/model.safetensors",
              "config.json"):
        assert (run / f).exists(), f
    assert json.loads((run / "codes" / "index.json").read_text())["summary"]["frames"] == 12 * 50  # train + valid, 1 s each
    assert main(args) == 2  # existing checkpoints without --resume: one-line error
    assert main(args + ["--resume"]) == 0
    assert main(["organism", "export", "--run", str(run), "--out", str(dst)]) == 0
    assert (dst / "README.md").exists() and (dst / "training" / "lm_log.jsonl").exists()
    assert (dst / "training" / "tune_log.jsonl").exists()  # --lm auto ships the fine-tuned LM
    assert (dst / "training" / "decoder_log.jsonl").exists()
    assert "caption-contrast fine-tuning" in (dst / "README.md").read_text()
    model, _ = O.load_organism_hf(path=dst)
    assert model.config.decoder.num_hidden_layers == 1 and model.config.decoder.hidden_size == 32
