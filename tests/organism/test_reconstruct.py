"""`musiclens organism reconstruct`: a corpus-format copy of the corpus through a codec, resumable."""

from __future__ import annotations

import json

import soundfile as sf

from musiclens.cli import main
from musiclens.models import organism as O


def test_reconstruct_writes_a_corpus_and_resumes(tiny_corpus, tmp_path):
    from transformers import EncodecModel

    codec_dir = tmp_path / "codec"
    EncodecModel(O.codec_config(codebook_size=32, num_filters=4, hidden_size=16)).save_pretrained(codec_dir)
    out = tmp_path / "recon"
    args = ["organism", "reconstruct", "--corpus", str(tiny_corpus), "--out", str(out), "--codec", str(codec_dir),
            "--splits", "valid", "--seconds", "1.0", "--threads", "1"]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["split"] for r in rows} == {"valid"}
    y, sr = sf.read(out / rows[0]["path"])
    assert sr == 16000 and len(y) == 16000 and rows[0]["seconds"] == 1.0
    before = (out / rows[0]["path"]).stat().st_mtime_ns
    assert main(args) == 0                                   # resume: nothing is re-encoded
    assert (out / rows[0]["path"]).stat().st_mtime_ns == before
    assert json.loads((out / "reconstruct_summary.json").read_text())["reconstructed_now"] == 0
    # bad input: one line, exit 2, nothing written
    assert main(["organism", "reconstruct", "--corpus", str(tiny_corpus), "--out", str(tiny_corpus)]) == 2
    assert main(["organism", "reconstruct", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "x"),
                 "--splits", "nope"]) == 2
    assert not (tmp_path / "x").exists()
