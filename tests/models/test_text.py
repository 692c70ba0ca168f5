"""The text tower: pooling by special ids, padding handling, inherited and own embeddings."""

import pytest
import torch

from sfclip.models import TextConfig, TextTransformer

PAD, CLS, EOS = 0, 2, 3


def tower(**kw) -> TextTransformer:
    torch.manual_seed(0)
    base = dict(context_length=12, vocab_size=40, width=16, layers=2, heads=2, pad_id=PAD, eos_id=EOS)
    base.update(kw)
    return TextTransformer(TextConfig(**base), embed_dim=8).double()


def ids_batch():
    ids = torch.tensor([[CLS, 10, 11, 12, EOS, PAD, PAD, PAD], [CLS, 20, 21, EOS, PAD, PAD, PAD, PAD]])
    return ids, (ids != PAD).long()


def test_padding_does_not_change_real_tokens():
    t = tower()
    ids, am = ids_batch()
    out = t(ids, am)
    short = t(ids[:, :5], am[:, :5])
    torch.testing.assert_close(out["tokens"][0, :5], short["tokens"][0])
    torch.testing.assert_close(out["pooled"], short["pooled"])
    # the attention mask derived from the pad id equals the explicit one
    torch.testing.assert_close(t(ids)["pooled"], out["pooled"])


def test_pooling_modes():
    ids, am = ids_batch()
    t = tower(pool="eos")
    out = t(ids, am)
    torch.testing.assert_close(out["pooled"], t.proj(out["tokens"][[0, 1], [4, 3]]))
    t = tower(pool="first")
    out = t(ids, am)
    torch.testing.assert_close(out["pooled"], t.proj(out["tokens"][:, 0]))
    t = tower(pool="mean")
    out = t(ids, am)
    want = torch.stack([out["tokens"][0, :5].mean(0), out["tokens"][1, :4].mean(0)])
    torch.testing.assert_close(out["pooled"], t.proj(want))


def test_causal_tokens_ignore_the_future():
    t = tower(causal=True, pool="eos")
    ids, am = ids_batch()
    a = t(ids, am)["tokens"]
    ids2 = ids.clone()
    ids2[0, 3] = 30
    b = t(ids2, am)["tokens"]
    torch.testing.assert_close(a[0, :3], b[0, :3])
    assert not torch.allclose(a[0, 3:5], b[0, 3:5])


def test_invalid_configs_name_the_field():
    with pytest.raises(ValueError, match="text.causal"):
        TextConfig(causal=True, pool="first")
    with pytest.raises(ValueError, match="text.eos_id"):
        TextConfig(pool="eos")
    with pytest.raises(ValueError, match="text.pool"):
        TextConfig(pool="max")


def test_inherited_table_is_copied_frozen_and_projected():
    t = tower(embedding="inherited", embed_width=6)
    table = torch.randn(40, 6, dtype=torch.double)
    t.inherit_embeddings(table)
    assert torch.equal(t.token_embedding.weight, table)
    assert not t.token_embedding.weight.requires_grad
    ids, am = ids_batch()
    t(ids, am)["pooled"].sum().backward()
    assert t.token_embedding.weight.grad is None
    assert t.embed_proj.weight.grad is not None
    with pytest.raises(ValueError, match="does not match"):
        t.inherit_embeddings(torch.randn(41, 6, dtype=torch.double))


def test_inherited_trainable_option():
    t = tower(embedding="inherited", embed_width=6, freeze_embeddings=False)
    ids, am = ids_batch()
    t(ids, am)["pooled"].sum().backward()
    assert t.token_embedding.weight.grad is not None


def test_too_long_input_fails_clearly():
    t = tower()
    with pytest.raises(ValueError, match="context_length"):
        t(torch.ones(1, 13, dtype=torch.long))


def test_padded_length_finds_the_last_real_column():
    from sfclip.models.text import padded_length, trim_padding

    am = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    assert int(padded_length(am)) == 3
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])  # left padding: nothing trails, nothing goes
    assert int(padded_length(left)) == 4
    gap = torch.tensor([[1, 0, 0, 1, 0]])  # a padded column between real ones stays
    assert int(padded_length(gap)) == 4
    ids = torch.arange(12).view(2, 6)
    short_ids, short_am = trim_padding(ids, am)
    assert torch.equal(short_ids, ids[:, :3]) and torch.equal(short_am, am[:, :3])


@pytest.mark.parametrize("kw", [dict(pool="first"), dict(pool="mean"), dict(pool="eos"),
                                dict(pool="eos", causal=True)])
def test_encode_text_skips_padding_exactly(kw):
    """`encode_text` drops all-padding columns; the full-width tower is the reference, forward and backward."""
    from sfclip.models import SFCLIP, ModelConfig, VisionConfig

    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, vision=VisionConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2),
                      text=TextConfig(context_length=12, vocab_size=40, width=16, layers=2, heads=2, pad_id=PAD,
                                      eos_id=EOS, **kw))
    model = SFCLIP(cfg).double()
    ids = torch.full((2, 12), PAD)
    ids[0, :5] = torch.tensor([CLS, 10, 11, 12, EOS])
    ids[1, :4] = torch.tensor([CLS, 20, 21, EOS])
    am = (ids != PAD).long()
    calls = []
    model.text.blocks[0].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[1]))
    got = model.encode_text(ids, am)
    assert calls == [5]  # the tower saw the 5 real columns, not 12
    ref = torch.nn.functional.normalize(model.text(ids, am)["pooled"], dim=-1)
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(got)
    params = [p for p in model.text.parameters() if p.requires_grad]
    got_grads = torch.autograd.grad(got, params, g, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, params, g, allow_unused=True)
    for a, b in zip(got_grads, ref_grads):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a if a is not None else torch.zeros_like(b), b)
