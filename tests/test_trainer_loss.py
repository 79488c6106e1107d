"""The InfoNCE loss against a float64 oracle (values and gradients), the mask, the memory bank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.loss import build_candidate_mask, compute_loss_from_embeddings, temperature_at, tier_margins
from trainer.memory_bank import MemoryBank


def oracle_loss(q, p, negs, bank, temperature, mask):
    """Per-query loop in float64: -log softmax of the own positive over every unmasked candidate."""
    batch = q.shape[0]
    docs = [p[j] for j in range(batch)]
    if negs is not None:
        docs += [negs[i, k] for i in range(negs.shape[0]) for k in range(negs.shape[1])]
    if bank is not None:
        docs += [bank[m] for m in range(bank.shape[0])]
    total = 0.0
    for i in range(batch):
        logits, own = [], None
        for c, doc in enumerate(docs):
            if mask is not None and mask[i][c] and c != i:
                continue
            if c == i:
                own = len(logits)
            logits.append(torch.dot(q[i], doc) / (q[i].norm() * doc.norm()) / temperature)
        logits = torch.stack(logits)
        total = total + torch.logsumexp(logits, 0) - logits[own]
    return total / batch


def _inputs(seed=0, batch=4, n=2, dim=8, bank=5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    p = q + 0.5 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    negs = torch.randn(batch, n, dim, generator=g, dtype=torch.float64)
    queue = torch.randn(bank, dim, generator=g, dtype=torch.float64) if bank else None
    return q, p, negs, queue


def _grads(fn, tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    value.backward()
    return value.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("temperature", [0.05, 0.5])
@pytest.mark.parametrize("with_mask", [False, True])
def test_loss_and_gradients_match_float64_oracle(temperature, with_mask):
    q, p, negs, bank = _inputs()
    mask = None
    if with_mask:  # query 0's other positive is row 2's positive and row 1's first negative
        ids = ["p0", "p1", "p2", "p3"] + ["n00", "n01", "p2", "n11", "n20", "n21", "n30", "n31"] + list("abcde")
        mask = build_candidate_mask([frozenset({"p0", "p2"}), frozenset({"p1"}), frozenset({"p2", "p0"}),
                                     frozenset({"p3", "c"})], ids)
        assert mask[0, 2] and mask[0, 6] and mask[2, 0] and mask[3, 12 + 2] and not mask[0, 0]
    want, want_grads = _grads(lambda a, b, c: oracle_loss(a, b, c, bank, temperature, mask), (q, p, negs))
    torch_mask = None if mask is None else torch.from_numpy(mask)

    def ours(a, b, c):
        return compute_loss_from_embeddings(a, b, c, bank.to(a.dtype), temperature=temperature,
                                            candidate_mask=torch_mask)

    got64, grads64 = _grads(ours, (q, p, negs))  # float64 in: exact up to rounding
    assert got64.item() == pytest.approx(want.item(), rel=1e-12)
    for g, w in zip(grads64, want_grads):
        assert torch.allclose(g, w, rtol=1e-9, atol=1e-12)
    got32, grads32 = _grads(ours, (q.float(), p.float(), negs.float()))  # float32 (training) within tolerance
    assert got32.item() == pytest.approx(want.item(), rel=1e-5)
    for g, w in zip(grads32, want_grads):
        assert torch.allclose(g.double(), w, rtol=1e-4, atol=1e-5)


def test_default_equals_sentence_transformers_mnrl():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, p, negs, _ = _inputs(seed=3, batch=5, n=3, bank=0)
    reference = MultipleNegativesRankingLoss(model=None)  # scale 20, cos_sim, query_to_doc
    want = reference.compute_loss_from_embeddings([q, p] + [negs[:, k] for k in range(3)], None)
    got = compute_loss_from_embeddings(q, p, negs)  # same candidate set, row-major order
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert compute_loss_from_embeddings(q, p).item() == pytest.approx(
        reference.compute_loss_from_embeddings([q, p], None).item(), rel=1e-12
    )


def oracle_directional_loss(q, p, negs, temperature, mask, directions, partition, same_query):
    """Per-row float64 loop over the extra directions: log-partitions per direction, joint or averaged."""
    batch = q.shape[0]
    docs = [p[j] for j in range(batch)] + [negs[i, k] for i in range(batch) for k in range(negs.shape[1])]

    def cos(a, b):
        return torch.dot(a, b) / (a.norm() * b.norm()) / temperature

    total = 0.0
    for i in range(batch):
        groups = [[cos(q[i], d) for c, d in enumerate(docs) if c == i or not mask[i][c]]]
        if "doc_to_query" in directions:  # p_i against every query that may take it as a negative
            groups.append([cos(q[j], p[i]) for j in range(batch) if j == i or not mask[j][i]])
        if "query_to_query" in directions:
            groups.append([cos(q[i], q[j]) for j in range(batch) if j != i and not same_query[i][j]])
        if partition == "joint":
            log_z = torch.logsumexp(torch.stack([x for g in groups for x in g]), 0)
        else:
            log_z = sum(torch.logsumexp(torch.stack(g), 0) for g in groups) / len(groups)
        total = total + log_z - cos(q[i], p[i])
    return total / batch


@pytest.mark.parametrize(
    "directions, partition",
    [(("query_to_doc", "doc_to_query"), "per_direction"), (("query_to_doc", "doc_to_query"), "joint"),
     (("query_to_doc", "query_to_query"), "joint"), (("query_to_doc", "doc_to_query", "query_to_query"), "joint")],
)
def test_extra_directions_match_float64_oracle(directions, partition):
    q, p, negs, _ = _inputs(seed=7, batch=4, n=2, bank=0)
    q[3] = q[1]  # rows 1 and 3 hold the same query: never each other's query_to_query negative
    ids = ["p0", "p1", "p2", "p3"] + ["n00", "n01", "p2", "n11", "n20", "n21", "n30", "n31"]
    mask = build_candidate_mask([frozenset({"p0", "p2"}), frozenset({"p1", "p3"}), frozenset({"p2"}),
                                 frozenset({"p3", "p1"})], ids)
    same = [[q[i].equal(q[j]) for j in range(4)] for i in range(4)]
    want, want_grads = _grads(
        lambda a, b, c: oracle_directional_loss(a, b, c, 0.07, mask, directions, partition, same), (q, p, negs)
    )
    got, grads = _grads(
        lambda a, b, c: compute_loss_from_embeddings(
            a, b, c, temperature=0.07, candidate_mask=torch.from_numpy(mask), directions=directions,
            partition=partition, same_query=torch.tensor(same)),
        (q, p, negs),
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for g, w in zip(grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-9, atol=1e-12)
    plain = compute_loss_from_embeddings(q, p, negs, temperature=0.07, candidate_mask=torch.from_numpy(mask))
    assert got.item() != pytest.approx(plain.item())  # the extra direction is really in the loss


@pytest.mark.parametrize(
    "directions, partition",
    [(("query_to_doc", "doc_to_query"), "per_direction"),
     (("query_to_doc", "doc_to_query", "query_to_query"), "joint")],
)
def test_directions_equal_sentence_transformers_mnrl(directions, partition):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, p, negs, _ = _inputs(seed=11, batch=5, n=2, bank=0)
    reference = MultipleNegativesRankingLoss(model=None, directions=directions, partition_mode=partition)
    want = reference.compute_loss_from_embeddings([q, p] + [negs[:, k] for k in range(2)], None)
    got = compute_loss_from_embeddings(q, p, negs, directions=directions, partition=partition)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_bad_directions_are_refused():
    q, p, _, _ = _inputs(bank=0)
    for directions in [("doc_to_query",), ("query_to_doc", "doc_to_doc"), ("query_to_doc", "query_to_doc")]:
        with pytest.raises(ValueError, match="query_to_doc"):
            compute_loss_from_embeddings(q, p, directions=directions)
    with pytest.raises(ValueError, match="per_direction"):
        compute_loss_from_embeddings(q, p, directions=("query_to_doc", "doc_to_query"), partition="split")
    with pytest.raises(ValueError, match="joint"):
        compute_loss_from_embeddings(q, p, directions=("query_to_doc", "query_to_query"), partition="per_direction")


def test_masking_a_candidate_equals_removing_it():
    q, p, negs, _ = _inputs(seed=5, batch=3, n=1, bank=0)
    mask = np.zeros((3, 6), dtype=bool)
    mask[1, 3] = True  # query 1 must not see row 0's negative
    masked = compute_loss_from_embeddings(q, p, negs, temperature=0.1, candidate_mask=torch.from_numpy(mask))
    keep = [0, 1, 2, 4, 5]
    docs = torch.cat([p, negs.reshape(-1, q.shape[1])])
    cos = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(docs, dim=-1).T / 0.1
    rows = [torch.logsumexp(cos[i, keep if i == 1 else list(range(6))], 0) - cos[i, i] for i in range(3)]
    assert masked.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-12)
    assert masked.item() != pytest.approx(compute_loss_from_embeddings(q, p, negs, temperature=0.1).item())


def test_memory_bank_changes_loss_and_receives_no_gradient():
    q, p, negs, bank = _inputs(seed=7)
    q.requires_grad_(True)
    bank = bank.clone().requires_grad_(True)
    without = compute_loss_from_embeddings(q, p, negs)
    with_bank = compute_loss_from_embeddings(q, p, negs, bank)
    assert with_bank.item() > without.item()  # more negatives in the denominator
    with_bank.backward()
    assert bank.grad is None and q.grad is not None


def test_memory_bank_is_fifo_detached_and_bounded():
    bank = MemoryBank(size=4, dim=2)
    source = torch.arange(12, dtype=torch.float32).reshape(6, 2).requires_grad_(True)
    bank.enqueue(source[:3] * 1.0, ["a", "b", "c"])
    assert len(bank) == 3 and bank.ids() == ["a", "b", "c"]
    bank.enqueue(source[3:] * 1.0, ["d", "e", "f"])
    assert len(bank) == 4 and bank.ids() == ["c", "d", "e", "f"]  # the oldest two left first
    assert torch.equal(bank.embeddings(), source[2:].detach())
    assert not bank.embeddings().requires_grad
    bank.enqueue(torch.zeros(9, 2), [str(i) for i in range(9)])  # more than size at once: the newest stay
    assert bank.ids() == ["5", "6", "7", "8"]
    with pytest.raises(ValueError, match="ids"):
        bank.enqueue(torch.zeros(2, 2), ["x"])


def test_candidate_mask_never_hides_own_positive_and_hides_other_positives():
    mask = build_candidate_mask([frozenset({"d1", "d2"}), frozenset({"d2"})], ["d1", "d2", "d2", "x", "d1"])
    assert mask.tolist() == [[False, True, True, False, True], [False, False, True, False, False]]


def test_tier_margins_per_tier():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negs = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # cos: 0, .707 | 1, 0
    margins = tier_margins(q, p, negs, ["hard", "random", "hard", "random"])
    assert margins["hard"] == pytest.approx(((1 - 0) + (1 - 1)) / 2)
    assert margins["random"] == pytest.approx(((1 - math.sqrt(0.5)) + 1) / 2, rel=1e-6)
    assert tier_margins(q, p, None, []) == {}


def test_temperature_schedules():
    assert temperature_at(0.05, None, "fixed", 0.7) == 0.05
    assert temperature_at(0.1, 0.05, "linear", 0.5) == pytest.approx(0.075)
    assert temperature_at(0.1, 0.05, "cosine", 0.0) == pytest.approx(0.1)
    assert temperature_at(0.1, 0.05, "cosine", 0.5) == pytest.approx(0.075)
    assert temperature_at(0.1, 0.05, "cosine", 1.0) == pytest.approx(0.05)
    assert temperature_at(0.1, 0.05, "linear", 2.0) == pytest.approx(0.05)
