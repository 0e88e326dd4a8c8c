"""Sparse optimizers against references: torch.optim on an equivalent dense parameter when every
row is touched, torch.optim.SparseAdam for lazy partial updates, and the TF / FTRL formulas
written out, over many steps with random gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from recis.embedding import EmbeddingEngine, EmbeddingSpec, Eviction, HashTable, Initializer, SparseGrad
from recis.optim import (
    SparseAdagrad,
    SparseAdam,
    SparseAdamTF,
    SparseAdamW,
    SparseAdamWTF,
    SparseFtrl,
    SparseRowWiseAdagrad,
    SparseSGD,
    clip_grad_norm_,
)

D = 8
STEPS = 25


def table_with_ids(n: int, seed: int = 0, init: Initializer | None = None) -> tuple[HashTable, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g).unique()  # 64-bit, negative included
    table = HashTable(D, init or Initializer.uniform(-1, 1), seed=seed)
    table.lookup(ids, step=0)
    return table, ids


def rows_of(table: HashTable, ids: Tensor) -> Tensor:
    found = table.lookup(ids, insert=False)
    return found.rows[found.inverse]


def values(table: HashTable, ids: Tensor) -> Tensor:
    return table.gather(rows_of(table, ids))


DENSE_PAIRS = [
    (lambda t: SparseSGD(t, lr=0.1, weight_decay=0.01), lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01)),
    (
        lambda t: SparseAdagrad(t, lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
    ),
    (
        lambda t: SparseAdam(t, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
    ),
    (
        lambda t: SparseAdamW(t, lr=0.01, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    ),
]


@pytest.mark.parametrize("pair", DENSE_PAIRS, ids=["sgd", "adagrad", "adam", "adamw"])
def test_matches_torch_when_every_row_is_touched(pair) -> None:
    make_ours, make_ref = pair
    table, ids = table_with_ids(50)
    dense = nn.Parameter(values(table, ids).clone())
    ours, ref = make_ours(table), make_ref([dense])
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        grad = torch.randn(len(ids), D, generator=g)
        perm = torch.randperm(len(ids), generator=g)  # row order must not matter
        ours.accumulate([SparseGrad(table, rows_of(table, ids[perm]), grad[perm])])
        ours.step()
        dense.grad = grad.clone()
        ref.step()
    torch.testing.assert_close(values(table, ids), dense.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [SparseAdamTF, lambda t, lr: SparseAdam(t, lr, eps=1e-12)], ids=["tf", "torch"])
def test_lazy_adam_matches_torch_sparse_adam(make) -> None:
    """Rows absent from a step keep their moments; bias correction uses the global step.

    torch.optim.SparseAdam adds eps outside the bias correction, as TF does (SparseAdamTF);
    torch.optim.Adam's form (SparseAdam) agrees with it when eps is negligible."""
    table, ids = table_with_ids(40)
    emb = nn.Embedding(len(ids), D, sparse=True)
    emb.weight.data.copy_(values(table, ids))
    ours = make(table, lr=0.05)
    ref = torch.optim.SparseAdam(emb.parameters(), lr=0.05, eps=1e-8 if make is SparseAdamTF else 1e-12)
    g = torch.Generator().manual_seed(2)
    for _ in range(STEPS):
        picked = torch.randperm(len(ids), generator=g)[: int(torch.randint(0, len(ids), (1,), generator=g))]
        grad = torch.randn(len(picked), D, generator=g)
        ours.accumulate([SparseGrad(table, rows_of(table, ids[picked]), grad)])
        ours.step()
        emb.weight.grad = torch.sparse_coo_tensor(picked[None], grad, (len(ids), D), check_invariants=True)
        ref.step()
    torch.testing.assert_close(values(table, ids), emb.weight.detach(), rtol=1e-5, atol=1e-6)


def tf_adam(w: Tensor, m: Tensor, v: Tensor, g: Tensor, t: int, lr: float, wd: float) -> None:
    b1, b2, eps = 0.9, 0.999, 1e-8
    w -= w * wd * lr  # Keras AdamW's decoupled decay (wd = 0: plain Adam)
    lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
    m += (g - m) * (1 - b1)
    v += (g * g - v) * (1 - b2)
    w -= lr_t * m / (v.sqrt() + eps)


def rowwise_adagrad(w: Tensor, s: Tensor, g: Tensor, t: int, lr: float, wd: float) -> None:
    g = g + wd * w
    s += g.square().mean()
    w -= lr * g / (s.sqrt() + 1e-8)


def ftrl(w: Tensor, z: Tensor, n: Tensor, g: Tensor, t: int, lr: float, l1: float, l2: float, beta: float) -> None:
    sigma = ((n + g * g).sqrt() - n.sqrt()) / lr
    z += g - sigma * w
    n += g * g
    w.copy_(torch.where(z.abs() <= l1, 0.0, -(z - z.sign() * l1) / ((beta + n.sqrt()) / lr + l2)))


# (optimizer, reference(w, slots, g, t), initial value and width (0: D) of each slot)
FORMULAS = [
    (lambda t: SparseAdamTF(t, lr=0.01), lambda w, s, g, t: tf_adam(w, *s, g, t, 0.01, 0.0), [(0.0, 0), (0.0, 0)]),
    (
        lambda t: SparseAdamWTF(t, lr=0.01, weight_decay=0.1),
        lambda w, s, g, t: tf_adam(w, *s, g, t, 0.01, 0.1),
        [(0.0, 0), (0.0, 0)],
    ),
    (
        lambda t: SparseRowWiseAdagrad(t, lr=0.1, weight_decay=0.01, initial_accumulator_value=0.5),
        lambda w, s, g, t: rowwise_adagrad(w, s[0], g, t, 0.1, 0.01),
        [(0.5, 1)],
    ),
    (
        lambda t: SparseFtrl(t, lr=0.1, l1=0.05, l2=0.01, beta=1.0, initial_accumulator_value=0.1),
        lambda w, s, g, t: ftrl(w, *s, g, t, 0.1, 0.05, 0.01, 1.0),
        [(0.0, 0), (0.1, 0)],
    ),
]


@pytest.mark.parametrize("case", FORMULAS, ids=["adam_tf", "adamw_tf", "rowwise_adagrad", "ftrl"])
def test_matches_written_out_formulas_lazily(case) -> None:
    """Per-row float64 references; each step touches a random subset of rows."""
    make, formula, slots = case
    table, ids = table_with_ids(30)
    opt = make(table)
    ref_w = {int(i): w.double() for i, w in zip(ids, values(table, ids), strict=True)}
    ref_s = {int(i): [torch.full((width or D,), init, dtype=torch.float64) for init, width in slots] for i in ids}
    g = torch.Generator().manual_seed(3)
    for t in range(1, STEPS + 1):
        picked = ids[torch.randperm(len(ids), generator=g)[: len(ids) // 2]]
        grad = torch.randn(len(picked), D, generator=g)
        opt.accumulate([SparseGrad(table, rows_of(table, picked), grad)])
        opt.step()
        for i, gi in zip(picked.tolist(), grad.double(), strict=True):
            formula(ref_w[i], ref_s[i], gi, t)
    expect = torch.stack([ref_w[int(i)] for i in ids]).float()
    torch.testing.assert_close(values(table, ids), expect, rtol=1e-4, atol=1e-5)


def test_evicted_rows_restart_with_fresh_state() -> None:
    table = HashTable(D, Initializer.constant(0.0), eviction=Eviction(max_age=1))
    opt = SparseAdam(table, lr=0.1)
    one, two = torch.tensor([5]), torch.tensor([-(2**62)])
    for step, ids in enumerate([one, one, two]):
        found = table.lookup(ids, step=step)
        opt.accumulate([SparseGrad(table, found.rows, torch.ones(1, D))])
        opt.step()
        table.evict(step)
    assert table.ids().tolist() == [-(2**62)]  # 5 was evicted at step 2
    found = table.lookup(one, step=3)
    state = table.state_dict()
    m = state["slot.adam.m"][state["ids"] == 5]
    assert torch.equal(m, torch.zeros(1, D)) and torch.equal(table.gather(found.rows), torch.zeros(1, D))


def test_repeated_rows_in_one_gradient_are_summed_before_the_update() -> None:
    """Adagrad applied twice differs from once with the sum; many rows span several threads."""
    table, ids = table_with_ids(3000)
    dense = nn.Parameter(values(table, ids).clone())
    ours, ref = SparseAdagrad(table, lr=0.5), torch.optim.Adagrad([dense], lr=0.5)
    g = torch.Generator().manual_seed(4)
    twice = torch.cat([torch.arange(len(ids)), torch.arange(len(ids))])
    grad = torch.randn(len(twice), D, generator=g)
    ours.accumulate([SparseGrad(table, rows_of(table, ids)[twice], grad)])
    ours.step()
    dense.grad = torch.zeros(len(ids), D).index_add_(0, twice, grad)
    ref.step()
    torch.testing.assert_close(values(table, ids), dense.detach(), rtol=1e-5, atol=1e-6)


def test_zero_grad_after_forward_and_closure_still_train() -> None:
    engine, batches = engine_and_batches()
    opt = SparseSGD(engine, lr=1.0)
    before = snapshot(engine)["embeddings"].clone()
    out = engine(batches[0])
    opt.zero_grad()  # forward, zero_grad, backward, step: the common torch order
    loss_of(out).backward()
    opt.step()
    assert not torch.equal(snapshot(engine)["embeddings"], before)
    after_first = snapshot(engine)["embeddings"].clone()
    loss = opt.step(lambda: (loss_of(engine(batches[1])).backward(), 1.0)[1])
    assert loss == 1.0 and not torch.equal(snapshot(engine)["embeddings"][: len(after_first)], after_first)


def test_accumulate_after_clipping_and_a_failed_step() -> None:
    table, ids = table_with_ids(4)
    opt = SparseSGD(table, lr=1.0)
    opt.accumulate([SparseGrad(table, rows_of(table, ids), torch.ones(len(ids), D))])
    clip_grad_norm_([], opt, max_norm=1.0)
    assert float(opt.grad_sq_norm()) == pytest.approx(1.0, rel=1e-4)  # the norm as scaled
    with pytest.raises(RuntimeError, match="already clipped"):
        opt.accumulate([SparseGrad(table, rows_of(table, ids), torch.ones(len(ids), D))])
    opt.zero_grad()
    opt.accumulate([SparseGrad(table, torch.tensor([12345]), torch.ones(1, D))])  # not a row
    with pytest.raises(ValueError, match="sparse_update"):
        opt.step()
    assert opt._step == 0  # nothing applied, the step did not advance, the bad gradient is gone
    opt.step()
    assert opt._step == 1


def test_duplicate_rows_are_summed_and_missing_rows_skipped() -> None:
    table, ids = table_with_ids(4)
    before = values(table, ids)
    opt = SparseSGD(table, lr=1.0)
    rows = rows_of(table, ids[[0, 0, 1]])
    opt.accumulate([SparseGrad(table, torch.cat([rows, torch.tensor([-1])]), torch.ones(4, D))])
    opt.step()
    after = values(table, ids)
    torch.testing.assert_close(after[0], before[0] - 2)
    torch.testing.assert_close(after[1], before[1] - 1)
    torch.testing.assert_close(after[2:], before[2:])
    opt.step()  # an empty step is fine
    torch.testing.assert_close(values(table, ids), after)


def engine_and_batches(seed: int = 0) -> tuple[EmbeddingEngine, list[dict[str, object]]]:
    engine = EmbeddingEngine({"a": EmbeddingSpec(D, seed=seed), "b": EmbeddingSpec(D, combiner="mean", seed=seed)})
    g = torch.Generator().manual_seed(seed)
    from recis.core import Ragged

    batches = []
    for _ in range(4):
        lengths = torch.randint(0, 4, (6,), generator=g)
        batches.append(
            {
                "a": torch.randint(-5, 5, (6,), generator=g),
                "b": Ragged.from_lengths(
                    torch.randint(-(2**40), 2**40, (int(lengths.sum()),), generator=g) % 7, lengths
                ),
            }
        )
    return engine, batches


def loss_of(out: dict[str, object]) -> Tensor:
    return (out["a"] * torch.arange(D)).sum() + out["b"].square().sum()  # type: ignore[operator]


def snapshot(engine: EmbeddingEngine) -> dict[str, Tensor]:
    (table,) = engine.tables().values()
    state = table.state_dict()
    order = torch.argsort(state["ids"] * 2 + state["tags"])
    return {k: v[order] for k, v in state.items()}


def big_engine_and_batches() -> tuple[EmbeddingEngine, list[dict[str, object]]]:
    """Weighted sqrtn bags and a sequence feature (the gathered path) over thousands of rows."""
    from recis.core import Ragged

    engine = EmbeddingEngine(
        {
            "bag": EmbeddingSpec(D, combiner="sqrtn", table="t"),
            "user": EmbeddingSpec(D, table="u"),
            "seq": EmbeddingSpec(D, combiner=None, max_len=5, table="s", initializer=Initializer.uniform(-1, 1)),
        }
    )
    g = torch.Generator().manual_seed(5)
    batches = []
    for _ in range(3):
        lengths = torch.randint(0, 30, (512,), generator=g)
        n = int(lengths.sum())
        bag = Ragged.from_lengths(torch.randint(0, 20000, (n,), generator=g), lengths, torch.rand(n, generator=g))
        seq = Ragged.from_lengths(torch.randint(0, 3000, (n,), generator=g), lengths)
        batches.append({"bag": bag, "user": torch.randint(-(2**62), 2**62, (512,), generator=g), "seq": seq})
    return engine, batches


def big_loss(out: dict[str, object]) -> Tensor:
    return out["bag"].sin().sum() + (out["user"] * 2).sum() + out["seq"].values.square().sum()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "make",
    [
        lambda e, f: SparseAdam(e, lr=0.05, fused=f),
        lambda e, f: SparseRowWiseAdagrad(e, lr=0.1, fused=f),
        lambda e, f: SparseFtrl(e, lr=0.1, l1=0.01, fused=f),
    ],
    ids=["adam", "rowwise_adagrad", "ftrl"],
)
def test_fused_equals_two_phase(make) -> None:
    import recis.core

    recis.core.set_num_threads(2)  # the backward's row ranges and the update's chunks split across threads
    try:
        results = []
        for fused in (False, True):
            engine, batches = big_engine_and_batches()
            opt = make(engine, fused)
            for batch in batches:
                opt.zero_grad()
                big_loss(engine(batch)).backward()
                opt.step()
            results.append({name: t.state_dict() for name, t in engine.tables().items()})
            if fused:
                opt.detach()
    finally:
        recis.core.set_num_threads(None)
    for name, state in results[0].items():
        for k in state:
            torch.testing.assert_close(results[1][name][k], state[k], rtol=0, atol=0, msg=f"{name} {k}")


def test_fused_refuses_micro_batch_accumulation_and_can_be_replaced() -> None:
    engine, batches = engine_and_batches()
    opt = SparseAdam(engine, fused=True)
    loss_of(engine(batches[0])).backward()
    with pytest.raises(RuntimeError, match="second gradient before step"):
        loss_of(engine(batches[1])).backward()
    with pytest.raises(RuntimeError, match="only from backward"):
        opt.accumulate([])
    with pytest.raises(ValueError, match="already has a live fused optimizer"):
        SparseAdam(engine, fused=True)
    opt.detach()
    SparseAdam(engine, fused=True).detach()
    del opt
    keep = SparseAdam(engine, fused=True)  # a dropped optimizer blocks nothing either
    assert keep.fused


def test_gradient_accumulation_equals_one_big_step() -> None:
    engine1, batches = engine_and_batches()
    opt1 = SparseAdagrad(engine1, lr=0.1)
    for batch in batches[:3]:  # three micro-batches, one step
        loss_of(engine1(batch)).backward()
    opt1.step()
    engine2, _ = engine_and_batches()
    opt2 = SparseAdagrad(engine2, lr=0.1)
    outs = [engine2(b) for b in batches[:3]]
    sum(loss_of(o) for o in outs).backward()  # type: ignore[union-attr]
    opt2.step()
    engine2.step = engine1.step
    a, b = snapshot(engine1), snapshot(engine2)
    for k in ("ids", "embeddings", "slot.adagrad.sum"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)


def test_scheduler_drives_lr_and_state_dict_round_trips() -> None:
    table, ids = table_with_ids(3)
    opt = SparseSGD(table, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    deltas = []
    for _ in range(3):
        before = values(table, ids)
        opt.accumulate([SparseGrad(table, rows_of(table, ids), torch.ones(len(ids), D))])
        opt.step()
        sched.step()
        deltas.append(float((before - values(table, ids)).mean()))
    assert deltas == pytest.approx([1.0, 0.5, 0.25])
    state = opt.state_dict()
    other = SparseSGD(HashTable(D), lr=9.0)
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == 0.125 and other._step == 3
    with pytest.raises(ValueError, match="state is for tables"):
        SparseSGD([HashTable(D), HashTable(D)]).load_state_dict(state)


@pytest.mark.parametrize("make", [SparseAdagrad, SparseAdam, SparseRowWiseAdagrad, SparseFtrl])
def test_torch_save_of_model_and_optimizer_resumes_exactly(make) -> None:
    """torch.save of the model's and the optimizer's state_dict, loaded into a fresh model and
    optimizer, trains on exactly as the original (slots and step count restored): a lost
    accumulator or moment would change the very next update."""
    import io

    def build():
        torch.manual_seed(0)
        specs = {"a": EmbeddingSpec(D, table="t"), "b": EmbeddingSpec(D, table="u"), "c": EmbeddingSpec(D, table="t")}
        engine = EmbeddingEngine(specs)  # "a" and "c" share a merged table: keys carry tags
        return engine, make(engine, lr=0.05)

    g = torch.Generator().manual_seed(1)
    batches = [{f: torch.randint(-50, 50, (12,), generator=g) for f in "abc"} for _ in range(6)]

    def train(engine, opt, part):
        for batch in part:
            out = engine(batch)
            sum((o * o).sum() for o in out.values()).backward()
            opt.step()
            opt.zero_grad()

    engine, opt = build()
    train(engine, opt, batches[:3])
    buf = io.BytesIO()
    torch.save({"model": engine.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)

    restored, ropt = build()
    with pytest.raises(ValueError, match="load the model's state_dict"):
        ropt.load_state_dict(saved["opt"])  # no rows yet: refused, nothing changes
    restored.load_state_dict(saved["model"])
    ropt.load_state_dict(saved["opt"])
    assert ropt._step == opt._step == 3
    train(engine, opt, batches[3:])
    train(restored, ropt, batches[3:])
    for (name, t), r in zip(engine.tables().items(), restored.tables().values(), strict=True):
        a, b = t.state_dict(), r.state_dict()
        assert a.keys() == b.keys() and any(k.startswith("slot.") for k in a), name
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_optimizer_state_with_other_slots_is_refused() -> None:
    engine = EmbeddingEngine({"a": EmbeddingSpec(D)})
    adam = SparseAdam(engine, lr=0.1)
    engine({"a": torch.tensor([1, 2])})["a"].sum().backward()
    adam.step()
    other = EmbeddingEngine({"a": EmbeddingSpec(D)})
    other.load_state_dict(engine.state_dict())
    theirs = r"the state \['slot.adam.m', 'slot.adam.v'\]"
    with pytest.raises(ValueError, match=r"has slots \['slot.adagrad.sum'\], " + theirs):
        SparseAdagrad(other, lr=0.1).load_state_dict(adam.state_dict())
    assert "sparse_slots" not in adam.state_dict(slots=False)


def test_clip_grad_norm_covers_sparse_and_dense() -> None:
    table, ids = table_with_ids(5)
    lin = nn.Linear(3, 1)
    lin.weight.grad, lin.bias.grad = torch.full((1, 3), 2.0), torch.full((1,), 2.0)
    sparse_grad = torch.full((len(ids), D), 1.0)
    opt = SparseSGD(table, lr=1.0)
    opt.accumulate([SparseGrad(table, rows_of(table, ids), sparse_grad)])
    before = values(table, ids)
    expect = math.sqrt(4 * 4 + len(ids) * D)
    total = clip_grad_norm_(lin.parameters(), opt, max_norm=1.0)
    assert float(total) == pytest.approx(expect)
    coef = 1.0 / (expect + 1e-6)
    torch.testing.assert_close(lin.weight.grad, torch.full((1, 3), 2.0 * coef))
    opt.step()
    torch.testing.assert_close(before - values(table, ids), torch.full((len(ids), D), coef))


def test_bad_arguments() -> None:
    table, _ = table_with_ids(2)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        SparseAdam(table, lr=-1.0)
    with pytest.raises(ValueError, match="no hash tables"):
        SparseAdam(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="expected EmbeddingEngines"):
        SparseAdam([3])  # type: ignore[list-item]
    opt = SparseAdam(table)
    with pytest.raises(ValueError, match=r"grad \(n, 8\)"):
        opt.accumulate([SparseGrad(table, torch.tensor([0]), torch.ones(1, D + 1))])
    with pytest.raises(ValueError, match="not one of this optimizer's tables"):
        opt.accumulate([SparseGrad(HashTable(D), torch.tensor([0]), torch.ones(1, D))])
    with pytest.raises(ValueError, match="sparse_update"):  # a row that does not exist
        opt.accumulate([SparseGrad(table, torch.tensor([12345]), torch.ones(1, D))])
        opt.step()
    with pytest.raises(ValueError, match="betas"):
        SparseAdam(table, betas=(1.0, 0.9))
