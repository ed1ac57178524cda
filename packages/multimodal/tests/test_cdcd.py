"""CDCD: the contrastive loss is bounded and its gradient separates positives from
negatives; negatives are what they claim to be; training, saving and sampling round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.core.processes.discrete import MaskAndReplaceProcess
from polydiff.multimodal.cdcd import (
    CDCDConfig,
    CDCDModel,
    ContrastiveSettings,
    TokenNetwork,
    TokenSet,
    TrainSettings,
    contrastive_term,
    dequantise_digits,
    info_nce,
    inter_negatives,
    intra_negatives,
    load_cdcd,
    load_digit_tokens,
    quantise_digits,
    train_cdcd,
)


def test_info_nce_is_bounded_and_normalised() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(64, generator=g) * 50, torch.randn(64, 5, generator=g) * 50
    loss = info_nce(pos, neg)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    # equal scores: the loss is exactly log(N + 1) (chance among N + 1 candidates)
    same = info_nce(torch.zeros(3), torch.zeros(3, 5))
    torch.testing.assert_close(same, torch.full((3,), math.log(6.0)))
    # negatives pushed arbitrarily far away: the loss tends to 0 and never goes below
    far = info_nce(torch.zeros(2), torch.full((2, 5), -1e6))
    assert (far >= 0).all() and float(far.max()) < 1e-6
    # the gradient on every score is a softmax weight: bounded by 1 / tau
    tau = 0.5
    p, n = pos.clone().requires_grad_(), neg.clone().requires_grad_()
    info_nce(p, n, tau).sum().backward()
    assert float(p.grad.abs().max()) <= 1 / tau + 1e-6
    assert float(n.grad.abs().max()) <= 1 / tau + 1e-6
    assert (p.grad <= 0).all() and (n.grad >= 0).all()  # raise the positive, lower negatives
    # brute force: -log softmax of the positive
    ref = -torch.log_softmax(torch.cat([pos[:, None], neg], 1), 1)[:, 0]
    torch.testing.assert_close(loss, ref)
    with pytest.raises(ValueError):
        info_nce(torch.zeros(3), torch.zeros(4, 2))


def test_inter_negatives_are_other_samples_of_other_classes() -> None:
    x0 = torch.arange(12).reshape(12, 1).expand(12, 4).contiguous()
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    neg = inter_negatives(x0, 3, labels=labels, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (12, 3, 4)
    idx = neg[:, :, 0]
    assert (idx != torch.arange(12)[:, None]).all()
    assert (labels[idx] != labels[:, None]).all()
    # without labels: never the sample itself, all picks distinct
    neg = inter_negatives(x0, 5, generator=torch.Generator().manual_seed(1))[:, :, 0]
    assert (neg != torch.arange(12)[:, None]).all()
    assert all(len(set(r.tolist())) == 5 for r in neg)


def test_intra_negatives_are_chunk_permutations_never_identity() -> None:
    b, chunks, width = 50, 2, 3
    x0 = torch.arange(b * chunks * width).reshape(b, chunks * width)
    neg = intra_negatives(x0, 4, chunks, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (b, 4, chunks * width)
    for i in range(b):
        orig = x0[i].reshape(chunks, width)
        for j in range(4):
            pieces = neg[i, j].reshape(chunks, width)
            assert sorted(map(tuple, pieces.tolist())) == sorted(map(tuple, orig.tolist()))
            assert not torch.equal(pieces, orig)  # with 2 chunks: always the swap
    with pytest.raises(ValueError):
        intra_negatives(x0, 1, 4)


def _toy_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c's sequences are mostly token c (two classes, 8 positions)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    noise = torch.rand(n, 8, generator=g) < 0.1
    x0 = torch.where(noise, 1 - labels[:, None], labels[:, None])
    return x0, labels


@pytest.mark.parametrize("variant", ["step", "sample"])
def test_contrastive_gradient_raises_the_positive_above_the_negatives(variant) -> None:
    """Minimising the contrastive term alone on a toy problem makes the positive's score
    beat the inter-sample negatives (other class): the loss falls from ~log(N + 1)."""
    torch.manual_seed(0)
    cfg = CDCDConfig(num_tokens=2, seq_len=8, num_labels=2, num_steps=10, hidden_size=16,
                     depth=1, num_heads=2, time_embed_dim=16)
    net = TokenNetwork(cfg)
    proc = MaskAndReplaceProcess(2, 10)
    s = ContrastiveSettings(variant=variant, negatives="inter", num_negatives=2)
    x0, labels = _toy_batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def term(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(3, 11, (x0.shape[0],), generator=g)
        xt = proc.q_sample(x0, t, generator=g)
        logits = net(xt, t, label=labels)
        return contrastive_term(net, proc, x0, xt, t, logits, {"label": labels}, s,
                                labels=labels, generator=g).mean()

    with torch.no_grad():
        before = float(np.mean([float(term(1000 + i)) for i in range(4)]))
    for step in range(60):
        opt.zero_grad()
        term(step).backward()
        opt.step()
    with torch.no_grad():
        after = float(np.mean([float(term(1000 + i)) for i in range(4)]))
    assert before > 0.7 * math.log(3)  # an untrained model barely tells them apart
    assert after < 0.5 * before


def test_vanilla_has_no_contrastive_term() -> None:
    x0, labels = _toy_batch(4)
    out = contrastive_term(lambda *a, **k: None, MaskAndReplaceProcess(2, 10), x0, x0,
                           torch.ones(4, dtype=torch.long), torch.zeros(4, 8, 2), {},
                           ContrastiveSettings(variant="vanilla"))
    assert torch.equal(out, torch.zeros(4))
    with pytest.raises(ValueError):
        ContrastiveSettings(variant="nope")


def test_digit_tokens() -> None:
    s = load_digit_tokens()
    assert s.train.tokens.shape[1] == 64 and s.num_tokens == 4
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert int(s.train.tokens.max()) == 3 and int(s.train.tokens.min()) == 0
    assert set(np.unique(s.test.labels)) == set(range(10))
    assert quantise_digits(np.array([0, 4, 5, 16]), 4).tolist() == [0, 0, 1, 3]
    assert np.allclose(dequantise_digits(np.array([0, 3]), 4), [0.125, 0.875])


def test_train_save_load_and_sample(tmp_path) -> None:
    cfg = CDCDConfig(num_steps=10, hidden_size=16, depth=1, num_heads=2, time_embed_dim=16)
    s = load_digit_tokens()
    data = s.train.subset(np.arange(64))
    ts = TrainSettings(steps=3, batch_size=16,
                       contrastive=ContrastiveSettings(variant="step", negatives="both"))
    model = train_cdcd(data, tmp_path / "run", cfg, ts, seed=0, resume=False)
    assert (tmp_path / "run" / "stats.jsonl").is_file()
    model.save(tmp_path / "model")
    again = load_cdcd(tmp_path / "model")
    labels = torch.arange(6) % 10
    a = model.generate(6, labels=labels, steps=4, seed=3)
    b = again.generate(6, labels=labels, steps=4, seed=3)
    assert a.shape == (6, 64) and torch.equal(a, b) and int(a.max()) < 4
    with pytest.raises(ValueError):
        model.generate(6, steps=4)  # class-conditional: labels are required
    with pytest.raises(ValueError):
        train_cdcd(TokenSet(np.zeros((4, 10), np.int64), np.zeros(4, np.int64)),
                   tmp_path / "bad", cfg, ts)
    assert isinstance(CDCDModel.create(cfg).network, TokenNetwork)
