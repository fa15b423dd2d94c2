"""Generative annotation: a multimodal LLM listens to a feature's concatenated top clips.

Two wire protocols, both plain HTTP + JSON through `requests`:

* OpenAI-compatible chat completions (`POST {url}/chat/completions`) with an
  `input_audio` content part (base64 WAV), as OpenAI's audio models and many
  local servers accept;
* the Gemini API (`POST {url}/v1beta/models/{model}:generateContent`) with an
  `inline_data` part (audio/wav).

The model is asked for JSON `{"label", "confidence", "description"}`. Why the
errors are soft: labelling thousands of features must not stop because one
request timed out or one answer was not JSON; such a feature is recorded as
unlabelled with the reason, and the run goes on.

Configuration (options override the environment): MUSICLENS_LLM_PROVIDER
(openai | gemini), MUSICLENS_LLM_URL, MUSICLENS_LLM_KEY, MUSICLENS_LLM_MODEL;
the usual OPENAI_BASE_URL / OPENAI_API_KEY and GEMINI_API_KEY are read too.
Without a URL and key the strategy is disabled.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass

import numpy as np

PROMPT = (
    "You will hear {n} short music excerpts separated by short silences. They are the moments where one "
    "internal feature of a music generation model is most active. What musical property do the excerpts "
    "share (for example an instrument, tempo, pitch register, loudness, drums, key/mode, or timbre "
    "brightness)? Answer only with JSON: {{\"label\": \"<2-5 words>\", \"confidence\": <0 to 1>, "
    "\"description\": \"<one sentence>\"}}."
)


@dataclass
class LLMConfig:
    provider: str = "openai"            # openai | gemini
    url: str | None = None
    key: str | None = None
    model: str = "gpt-4o-audio-preview"
    timeout: float = 60.0
    retries: int = 1

    @classmethod
    def from_env(cls, provider: str | None = None, url: str | None = None, key: str | None = None,
                 model: str | None = None, timeout: float = 60.0, retries: int = 1) -> "LLMConfig":
        env = os.environ
        provider = provider or env.get("MUSICLENS_LLM_PROVIDER") or ("gemini" if env.get("GEMINI_API_KEY") and not
                                                                    env.get("OPENAI_API_KEY") else "openai")
        if provider not in ("openai", "gemini"):
            from ..errors import MusiclensError

            raise MusiclensError(f"unknown LLM provider {provider!r} (openai or gemini)")
        if provider == "gemini":
            url = url or env.get("MUSICLENS_LLM_URL") or ("https://generativelanguage.googleapis.com"
                                                          if env.get("GEMINI_API_KEY") else None)
            key = key or env.get("MUSICLENS_LLM_KEY") or env.get("GEMINI_API_KEY")
            model = model or env.get("MUSICLENS_LLM_MODEL") or "gemini-2.0-flash"
        else:
            url = url or env.get("MUSICLENS_LLM_URL") or env.get("OPENAI_BASE_URL") or (
                "https://api.openai.com/v1" if env.get("OPENAI_API_KEY") else None)
            key = key or env.get("MUSICLENS_LLM_KEY") or env.get("OPENAI_API_KEY")
            model = model or env.get("MUSICLENS_LLM_MODEL") or "gpt-4o-audio-preview"
        return cls(provider, url, key, model, timeout, retries)

    @property
    def enabled(self) -> bool:
        """A URL is required; a key too, except for loopback servers (local models often need none)."""
        if not self.url:
            return False
        local = re.match(r"https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", self.url + "/") is not None
        return bool(self.key) or local


def wav_base64(y: np.ndarray, sr: int) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(y, dtype=np.float32), -1, 1), sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def parse_answer(text: str) -> dict:
    """{"label", "confidence", "description"} from a model's text; raises ValueError when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty answer")
    t = text.strip()
    t = re.sub(r"^```(?:json)?\s*|\s*```$", "", t)
    m = re.search(r"\{.*\}", t, flags=re.S)
    if not m:
        raise ValueError(f"no JSON object in answer: {text[:80]!r}")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise ValueError(f"answer is not valid JSON ({e.msg})")
    label = obj.get("label") if isinstance(obj, dict) else None
    if not isinstance(label, str) or not label.strip():
        raise ValueError("answer has no label")
    try:
        conf = float(obj.get("confidence", float("nan")))
    except (TypeError, ValueError):
        conf = float("nan")
    if not (0.0 <= conf <= 1.0):
        conf = float("nan")
    desc = obj.get("description", "")
    return {"label": label.strip()[:80], "confidence": conf, "description": str(desc)[:400]}


class LLMClient:
    """Sends one audio file + prompt per feature; returns a parsed answer or raises ValueError."""

    def __init__(self, cfg: LLMConfig):
        import requests

        self.cfg = cfg
        self.session = requests.Session()

    @property
    def provenance(self) -> str:
        return f"llm:{self.cfg.provider}:{self.cfg.model}"

    def _request(self, prompt: str, audio_b64: str) -> str:
        c = self.cfg
        if c.provider == "gemini":
            url = f"{c.url.rstrip('/')}/v1beta/models/{c.model}:generateContent"
            headers = {"Content-Type": "application/json"}
            if c.key:
                headers["x-goog-api-key"] = c.key
            body = {"contents": [{"role": "user", "parts": [
                {"text": prompt}, {"inline_data": {"mime_type": "audio/wav", "data": audio_b64}}]}],
                "generationConfig": {"temperature": 0.0, "responseMimeType": "application/json"}}
            r = self.session.post(url, json=body, headers=headers, timeout=c.timeout)
            r.raise_for_status()
            data = r.json()
            return data["candidates"][0]["content"]["parts"][0]["text"]
        url = f"{c.url.rstrip('/')}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if c.key:
            headers["Authorization"] = f"Bearer {c.key}"
        body = {"model": c.model, "temperature": 0.0, "messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "input_audio", "input_audio": {"data": audio_b64, "format": "wav"}}]}]}
        r = self.session.post(url, json=body, headers=headers, timeout=c.timeout)
        r.raise_for_status()
        data = r.json()
        return data["choices"][0]["message"]["content"]

    def label(self, y: np.ndarray, sr: int, n_clips: int) -> dict:
        """Ask for a label; raises ValueError (with a one-line reason) on any failure."""
        import requests

        prompt = PROMPT.format(n=n_clips)
        audio_b64 = wav_base64(y, sr)
        last = "no attempt"
        for _ in range(max(1, self.cfg.retries + 1)):
            try:
                return parse_answer(self._request(prompt, audio_b64))
            except requests.Timeout:
                last = f"timeout after {self.cfg.timeout:g} s"
            except requests.JSONDecodeError:
                last = "response body is not JSON"
                break
            except requests.HTTPError as e:
                last = f"HTTP {e.response.status_code if e.response is not None else '?'}"
                if e.response is not None and e.response.status_code < 500 and e.response.status_code != 429:
                    break
            except requests.RequestException as e:
                last = f"connection failed: {type(e).__name__}"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                last = f"unexpected response shape ({type(e).__name__})"
                break
            except ValueError as e:
                last = str(e)
                break
        raise ValueError(last)
