"""Generating with some codebooks copied from given codes (models/keep.py), on both tiny MusicGen classes."""

import pytest
import torch

from musiclens.errors import MusiclensError

VARIANTS = ["tiny_model", "tiny_melody"]


@pytest.fixture(params=VARIANTS)
def model(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("guidance", [3.0, 1.0])
@pytest.mark.parametrize("keep", [[0], [1, 3]])
def test_kept_codebooks_are_copied_and_the_others_sampled(model, keep, guidance):
    ref = model.generate(["a", "b"], seconds=0.4, seed=0).codes  # [2, 4, 20]
    free = model.generate(["c", "d"], seconds=0.4, seed=1, guidance_scale=guidance).codes
    got = model.generate(["c", "d"], seconds=0.4, seed=1, guidance_scale=guidance, keep_codes=ref,
                         keep_codebooks=keep).codes
    assert got.shape == ref.shape
    for k in range(4):
        if k in keep:
            assert torch.equal(got[:, k], ref[:, k])
        else:  # sampled, and given the kept ones: not the reference, and not what free sampling drew
            assert (got[:, k] != ref[:, k]).any()
    assert not torch.equal(got, free)


def test_keeping_every_codebook_reproduces_the_codes_greedy_or_sampled(model):
    ref = model.generate(["a", "b"], seconds=0.3, seed=0).codes
    for sample in (True, False):
        got = model.generate(["x", ""], seconds=0.3, seed=4, do_sample=sample, keep_codes=ref,
                             keep_codebooks=[0, 1, 2, 3]).codes
        assert torch.equal(got, ref)


def test_codes_shorter_than_the_clip_and_pad_ids_are_not_forced(tiny_model):
    m = tiny_model
    ref = m.generate(["a", "b"], seconds=0.2, seed=0).codes  # 10 frames
    got = m.generate(["c", "d"], seconds=0.4, seed=1, keep_codes=ref, keep_codebooks=[0]).codes
    assert got.shape[-1] == 20 and torch.equal(got[:, 0, :10], ref[:, 0])
    padded = ref.clone()
    padded[1] = m.pad_token_id  # the second clip keeps nothing: its row generates as if free
    got = m.generate(["c", "d"], seconds=0.2, seed=1, keep_codes=padded, keep_codebooks=[0]).codes
    assert torch.equal(got[0, 0], ref[0, 0]) and not torch.equal(got[1, 0], ref[1, 0])


def test_keep_with_an_audio_prompt(tiny_model):
    m = tiny_model
    ref = m.generate(["a", "b"], seconds=0.4, seed=0)
    wav = m.decode_codes(ref.codes[:, :, :8])
    prompt_codes = m.encode_audio(wav)
    got = m.generate(["a", "b"], seconds=0.4, seed=2, audio_prompt=wav, keep_codes=ref.codes, keep_codebooks=[2])
    n = prompt_codes.shape[-1]
    assert torch.equal(got.codes[:, :, :n], prompt_codes)  # the prompt, all codebooks
    assert torch.equal(got.codes[:, 2, n:], ref.codes[:, 2, n:])  # then codebook 2 of the kept codes


def test_bad_keep_requests(tiny_model):
    from musiclens.models.keep import parse_codebooks

    assert parse_codebooks("2,0,2", 4) == [0, 2] and parse_codebooks([3], 4) == [3]
    with pytest.raises(MusiclensError, match="numbers separated by commas"):
        parse_codebooks("0,x", 4)
    ref = tiny_model.generate(["a"], seconds=0.1, seed=0).codes
    with pytest.raises(MusiclensError, match="codebook 4 does not exist"):
        tiny_model.generate(["a"], seconds=0.1, keep_codes=ref, keep_codebooks=[4])
    with pytest.raises(MusiclensError, match="name at least one codebook"):
        tiny_model.generate(["a"], seconds=0.1, keep_codes=ref, keep_codebooks=[])
    with pytest.raises(MusiclensError, match="needs keep_codes"):
        tiny_model.generate(["a"], seconds=0.1, keep_codebooks=[0])
    with pytest.raises(MusiclensError, match=r"keep_codes: expected \[2, 4, frames\]"):
        tiny_model.generate(["a", "b"], seconds=0.1, keep_codes=ref, keep_codebooks=[0])
