"""Annotators on small cases: tagger agreement, an HF audio classifier, the CLI end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from musiclens.errors import MusiclensError
from musiclens.features.annotation import annotate_tagger
from musiclens.features.taggers import HFAudioTagger, load_tagger
from musiclens.measure.spectral import centroid

sys.path.insert(0, str(Path(__file__).parent))
from small_fixtures import make_sae, make_store, tiny_hf_clap, tiny_hf_classifier, tone  # noqa: E402


class CentroidTagger:
    """A real (if simple) tagger: brightness from the spectral centroid."""

    name = "centroid"

    def predict(self, y, sr):
        return {"brightness": "bright" if centroid(y, sr) > 1500 else "dark"}


def test_tagger_keeps_shared_labels(tmp_path):
    d = [tone(tmp_path / f"d{i}.wav", 110 + 5 * i) for i in range(6)]
    b = [tone(tmp_path / f"b{i}.wav", 3000 + 50 * i, noise=0.2, seed=i) for i in range(6)]
    feats = [{"key": "s/0", "clips": d[:4]}, {"key": "s/1", "clips": b[:4]},
             {"key": "s/2", "clips": [d[4], d[5], b[4], b[5]]}, {"key": "s/3", "clips": [d[0], d[1], d[2], b[0]]}]
    out = annotate_tagger(feats, CentroidTagger(), agreement=0.7, progress=False, max_p=1.0)
    assert out["s/0"]["label"] == "brightness=dark" and out["s/0"]["confidence"] == 1.0
    assert out["s/0"]["concepts"] == ["brightness=dark"] and out["s/0"]["provenance"] == "centroid"
    assert out["s/1"]["label"] == "brightness=bright"
    assert out["s/2"]["label"] is None and "no label" in out["s/2"]["error"]
    assert out["s/3"]["label"] == "brightness=dark" and out["s/3"]["confidence"] == 0.75
    out = annotate_tagger(feats, CentroidTagger(), agreement=0.8, progress=False, max_p=1.0)
    assert out["s/3"]["label"] is None
    # the binomial gate: 4 of 4 clips 'dark' when half of all clips are dark has p = 1/16
    out = annotate_tagger(feats, CentroidTagger(), agreement=0.7, progress=False, max_p=0.1)
    assert out["s/0"]["label"] == "brightness=dark" and out["s/0"]["labels"][0]["p"] == 0.0625
    assert out["s/3"]["label"] is None          # 3 of 4: p = 5/16
    out = annotate_tagger(feats, CentroidTagger(), agreement=0.7, progress=False)    # default p <= 0.01
    assert all(r["label"] is None for r in out.values())


def test_hf_audio_classifier_tagger(tmp_path):
    p = tiny_hf_classifier(tmp_path / "clf")
    t = load_tagger(str(p))
    assert isinstance(t, HFAudioTagger)
    y = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    pred = t.predict(y, 8000)          # resampled to the model's 16 kHz
    assert list(pred) == ["clf"] and pred["clf"] in {"hum", "hiss", "click"}
    assert pred == t.predict(y, 8000)
    with pytest.raises(MusiclensError):
        load_tagger(str(tmp_path / "missing"))


def test_annotate_cli_end_to_end(tmp_path, monkeypatch):
    from musiclens.cli import main

    for k in ("MUSICLENS_LLM_URL", "MUSICLENS_LLM_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    store = make_store(tmp_path, n_clips=8, layers=(1,))
    sae = make_sae(tmp_path / "sae", 1, 32, 3, 0)
    feat = tmp_path / "feat"
    assert main(["features", "--store", str(store), "--sae", str(sae), "--out", str(feat), "--max-rate", "0.9",
                 "--max-clip-features", "4", "--no-report"]) == 0
    clf, clap = tiny_hf_classifier(tmp_path / "clf"), tiny_hf_clap(tmp_path / "clap")
    assert main(["annotate", "--features", str(feat), "--tagger", str(clf), "--clap", str(clap),
                 "--clap-agreement", "0"]) == 0
    ann = json.loads((feat / "annotations.json").read_text())
    assert len(ann["features"]) == 4
    assert {r["strategy"] for r in ann["summary"]} == {"tagger", "clap"}       # llm skipped: no endpoint
    for by in ann["features"].values():
        assert by["clap"]["label"] and by["clap"]["provenance"].startswith("hf-clap")
        assert by["tagger"]["provenance"].startswith("hf-classifier")
    assert "clap: <b>" in (feat / "report.html").read_text()
    assert (feat / "annotations.parquet").exists()
    assert main(["annotate", "--features", str(feat)]) == 2                    # exists: needs --resume/--overwrite
    assert main(["annotate", "--features", str(feat), "--resume", "--strategies", "clap,bogus"]) == 2

    # the LLM strategy through the CLI, against a loopback OpenAI-compatible server; answers alternate
    # between a label and a malformed reply, and the run goes on
    import itertools
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    replies = itertools.cycle(['{"label": "bright flute", "confidence": 0.9}', "no idea"])

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps({"choices": [{"message": {"content": next(replies)}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert main(["annotate", "--features", str(feat), "--resume", "--strategies", "llm", "--llm-url",
                     f"http://127.0.0.1:{httpd.server_address[1]}/v1", "--save-every", "1"]) == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    ann = json.loads((feat / "annotations.json").read_text())
    llm = [by["llm"] for by in ann["features"].values()]
    assert len(llm) == 4 and sum(1 for r in llm if r["label"] == "bright flute") == 2
    assert all(r["error"] for r in llm if r["label"] is None)
    assert all("clap" in by for by in ann["features"].values())               # --resume kept the others
    assert {r["strategy"] for r in ann["summary"]} == {"tagger", "clap", "llm"}


def test_organism_tagger_if_shipped(tmp_path):
    from musiclens.features.taggers import OrganismTagger

    try:
        t = load_tagger("organism")
    except MusiclensError as e:
        pytest.skip(f"organism tagger not shipped here: {e}")
    assert isinstance(t, OrganismTagger)
    y = np.sin(2 * np.pi * 440 * np.arange(32000) / 16000).astype(np.float32) * 0.3
    pred = t.predict(y, 16000)
    assert {"instrument", "brightness"} <= set(pred) and all(isinstance(v, str) for v in pred.values())
