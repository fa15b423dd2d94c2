"""Prompt-side capture (issue 2 item 6): the right positions, batched == one by one."""

from __future__ import annotations

import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.extract.prompt import capture_prompts

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread is fastest (two on a loaded 2-core box thrash)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROMPTS = ["a fast bright piano tune", "slow organ", "a violin playing a long hymn melody"]


def test_melody_eos_is_last_text_token_of_hf_forward(tiny_melody):
    m = tiny_melody
    cap = capture_prompts(m, PROMPTS, rule="auto", batch_size=3, progress=False)
    assert cap.rule == "eos"
    for i, p in enumerate(PROMPTS):
        text = m.text_inputs([p])                    # unpadded: its last token is the EOS/[SEP]
        n_tok = int(text["attention_mask"].sum())
        ids = torch.full((m.n_codebooks, 1), m.pad_token_id, dtype=torch.long)
        with torch.no_grad():
            out = m.hf(**text, decoder_input_ids=ids, output_hidden_states=True, use_cache=False)
        pos = m.hf.config.chroma_length + n_tok - 1
        for l in range(m.n_layers - 1):              # hidden_states[l+1] = output of layer l (last has final LN)
            ref = out.hidden_states[l + 1][0, pos]
            torch.testing.assert_close(cap.acts[l][i], ref.float(), rtol=1e-5, atol=1e-5)


def test_melody_padding_does_not_change_vectors(tiny_melody):
    batched = capture_prompts(tiny_melody, PROMPTS, batch_size=3, progress=False)
    single = capture_prompts(tiny_melody, PROMPTS[:1], batch_size=1, progress=False)
    for l in batched.acts:
        torch.testing.assert_close(batched.acts[l][0], single.acts[l][0], rtol=1e-5, atol=1e-5)


def test_musicgen_generate_rule_means_cond_branch_steps(tiny_model):
    m = tiny_model
    from musiclens import hooks

    cap = capture_prompts(m, PROMPTS[:2], layers=[1, 4], rule="auto", batch_size=2, seconds=0.2, seed=3,
                          progress=False)
    assert cap.rule == "generate" and sorted(cap.acts) == [1, 4]
    with hooks.capture(m, ["layer.4"], branch="cond") as c:
        m.generate(PROMPTS[:2], seconds=0.2, seed=3, guidance_scale=3.0)
    ref = c.stacked("layer.4").float().mean(dim=1)
    assert c.stacked("layer.4").shape[1] == len(c.steps["layer.4"]) >= m.frames_for(0.2)   # one per decoder call
    torch.testing.assert_close(cap.acts[4], ref)


def test_musicgen_teacher_rule_depends_on_prompt_only(tiny_model):
    cap = capture_prompts(tiny_model, [PROMPTS[0], PROMPTS[0], PROMPTS[1]], layers=[2], rule="teacher",
                          batch_size=2, seconds=0.2, progress=False)
    a = cap.acts[2]
    torch.testing.assert_close(a[0], a[1])           # same prompt, same shared context -> same vector
    assert (a[0] - a[2]).norm() > 1e-4               # another prompt moves it


def test_bad_capture_requests(tiny_model):
    with pytest.raises(MusiclensError, match="out of range"):
        capture_prompts(tiny_model, PROMPTS, layers=[99], progress=False)
    with pytest.raises(MusiclensError, match="Melody"):
        capture_prompts(tiny_model, PROMPTS, rule="eos", progress=False)
    with pytest.raises(MusiclensError, match="no prompts"):
        capture_prompts(tiny_model, [], progress=False)
