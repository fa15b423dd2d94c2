"""The LLM client against a local loopback server speaking the OpenAI and Gemini protocols."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from musiclens.features.annotation import annotate_llm
from musiclens.features.llm import LLMClient, LLMConfig, parse_answer


class _Server:
    """Answers by the `mode` attribute; records every request body it received."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                mode = outer.mode
                if mode == "slow":
                    time.sleep(1.0)
                answer = {"ok": '{"label": "solo trumpet", "confidence": 0.8, "description": "brassy"}',
                          "fenced": '```json\n{"label": "fast tempo", "confidence": 0.6}\n```',
                          "nolabel": '{"confidence": 0.9}', "prose": "I think it is a piano.",
                          "slow": '{"label": "late", "confidence": 0.5}'}.get(mode, "")
                if mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if mode == "html":
                    data = b"<html>not json</html>"
                elif "generateContent" in self.path:
                    data = json.dumps({"candidates": [{"content": {"parts": [{"text": answer}]}}]}).encode()
                else:
                    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.close()


def _tone(sr=8000, sec=0.5):
    t = np.arange(int(sr * sec)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr


def test_openai_protocol_sends_audio_and_parses(server):
    server.mode, server.requests[:] = "ok", []
    c = LLMClient(LLMConfig(provider="openai", url=server.url + "/v1", key="k123", model="m", timeout=5))
    y, sr = _tone()
    ans = c.label(y, sr, 3)
    assert ans["label"] == "solo trumpet" and ans["confidence"] == pytest.approx(0.8)
    req = server.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer k123"
    part = req["body"]["messages"][0]["content"][1]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    back, sr2 = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
    assert sr2 == sr and len(back) == len(y)
    assert "3 short music excerpts" in req["body"]["messages"][0]["content"][0]["text"]


def test_gemini_protocol(server):
    server.mode, server.requests[:] = "fenced", []
    c = LLMClient(LLMConfig(provider="gemini", url=server.url, key="g", model="gem", timeout=5))
    ans = c.label(*_tone(), 2)
    assert ans["label"] == "fast tempo" and ans["confidence"] == pytest.approx(0.6)
    req = server.requests[-1]
    assert req["path"] == "/v1beta/models/gem:generateContent" and req["headers"]["x-goog-api-key"] == "g"
    assert req["body"]["contents"][0]["parts"][1]["inline_data"]["mime_type"] == "audio/wav"


@pytest.mark.parametrize("mode,reason", [("slow", "timeout"), ("nolabel", "no label"), ("prose", "no JSON"),
                                         ("500", "HTTP 500"), ("html", "not JSON")])
def test_errors_leave_feature_unlabelled_and_run_continues(server, tmp_path, mode, reason):
    y, sr = _tone()
    sf.write(tmp_path / "concat.wav", y, sr)
    feats = [{"key": f"s/{i}", "concat": tmp_path / "concat.wav", "n": 10} for i in range(2)]
    c = LLMClient(LLMConfig(provider="openai", url=server.url, key="k", timeout=0.3, retries=1))
    server.mode = mode
    t0 = time.time()
    out = annotate_llm(feats, c, progress=False)
    assert time.time() - t0 < 5
    assert set(out) == {"s/0", "s/1"}                      # the run went on past the first failure
    for rec in out.values():
        assert rec["label"] is None and reason in rec["error"], rec
    server.mode = "ok"
    out = annotate_llm(feats, c, progress=False)
    assert out["s/1"]["label"] == "solo trumpet" and out["s/1"]["concepts"] == ["instrument=trumpet"]


def test_parse_answer_and_config(monkeypatch):
    assert parse_answer('xx {"label": "dark timbre", "confidence": 7}')["confidence"] != 7
    with pytest.raises(ValueError):
        parse_answer("")
    for k in ("MUSICLENS_LLM_URL", "MUSICLENS_LLM_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY",
              "MUSICLENS_LLM_PROVIDER"):
        monkeypatch.delenv(k, raising=False)
    assert not LLMConfig.from_env().enabled                  # disabled when nothing is configured
    monkeypatch.setenv("MUSICLENS_LLM_URL", "http://127.0.0.1:9/v1")
    assert LLMConfig.from_env().enabled                      # loopback needs no key
    monkeypatch.setenv("MUSICLENS_LLM_URL", "https://example.org/v1")
    assert not LLMConfig.from_env().enabled
    monkeypatch.setenv("MUSICLENS_LLM_KEY", "x")
    assert LLMConfig.from_env().enabled
