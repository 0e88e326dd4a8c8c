"""Pooled lookup kernels against the torch reference, forward and backward; opcheck."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recis.embedding import pooled_embedding, pooled_embedding_reference
from recis.embedding.ops import COMBINERS


@st.composite
def pooling_inputs(draw):
    lengths = draw(st.lists(st.integers(0, 6), max_size=20))
    if lengths and draw(st.booleans()):
        lengths[0] = 2000  # one huge bag
    n = sum(lengths)
    num_unique = draw(st.integers(1, 30))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    dim = draw(st.sampled_from([1, 4, 33]))
    emb = torch.randn(num_unique, dim, generator=gen)
    inverse = torch.randint(0, num_unique, (n,), generator=gen)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0, out=offsets[1:])
    weights = torch.rand(n, generator=gen) if draw(st.booleans()) else None
    return emb, inverse, offsets, weights, draw(st.sampled_from(["sum", "mean", "sqrtn"]))


@pytest.mark.slow  # about 3 s of hypothesis examples
@given(pooling_inputs())
def test_forward_and_backward_match_reference(args):
    emb, inverse, offsets, weights, combiner = args
    assert_matches_reference(
        emb,
        lambda e: pooled_embedding(e, inverse, offsets, weights, combiner),
        lambda e: pooled_embedding_reference(e, inverse, offsets, weights, combiner),
    )


def assert_matches_reference(emb, op, reference):
    """op(emb) equals reference(emb), forward and the gradient with respect to emb."""
    a, b = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    out, ref = op(a), reference(b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_empty_bags_give_zeros_for_every_combiner():
    emb = torch.randn(2, 3)
    offsets = torch.tensor([0, 0, 2, 2])
    for combiner in ("sum", "mean", "sqrtn"):
        out = pooled_embedding(emb, torch.tensor([0, 1]), offsets, None, combiner)
        assert out[0].abs().sum() == 0 and out[2].abs().sum() == 0 and torch.isfinite(out).all()
    empty = pooled_embedding(emb, torch.tensor([], dtype=torch.int64), torch.tensor([0]), None, "mean")
    assert empty.shape == (0, 3)


def test_opcheck():
    emb = torch.randn(5, 4, requires_grad=True)
    inverse = torch.tensor([0, 4, 4, 2, 1])
    offsets = torch.tensor([0, 2, 2, 5])
    for weights in (None, torch.rand(5)):
        for combiner in ("sum", "mean", "sqrtn"):
            torch.library.opcheck(pooled_embedding, (emb, inverse, offsets, weights, combiner))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (torch.randn(2, 3), torch.tensor([0, 2]), torch.tensor([0, 2]), None, "sum"),
            r"inverse\[1\]=2 is out of range for 2",
        ),
        ((torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 3]), None, "sum"), "last offset must equal"),
        ((torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 2]), torch.ones(3), "sum"), "weights must have 2"),
        ((torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 2]), None, "max"), "combiner must be one of"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        pooled_embedding(*args)


def test_table_pooled_reads_rows_in_place_and_matches_the_copying_path():
    from recis.embedding import HashTable, Initializer
    from recis.embedding.ops import table_pooled

    table = HashTable(dim=4, initializer=Initializer.uniform(-1, 1))
    ids = torch.tensor([5, 9, 5, -3, 9, 9])
    found = table.lookup(ids)
    offsets = torch.tensor([0, 2, 2, 6])
    weights = torch.rand(6)
    anchor = torch.zeros(()).expand(len(found.rows), 4).requires_grad_()
    emb = found.embeddings.clone().requires_grad_()
    for code, combiner in enumerate(COMBINERS):
        got = table_pooled(anchor, found.rows, found.inverse, offsets, weights, [code], [3], table.handle)
        want = pooled_embedding(emb, found.inverse, offsets, weights, combiner)
        torch.testing.assert_close(got, want)
        grad = torch.randn_like(got)
        got.backward(grad)
        want.backward(grad)
        torch.testing.assert_close(anchor.grad, emb.grad)
        anchor.grad = emb.grad = None
    args = (anchor, found.rows, found.inverse, offsets, weights, [1, 2], [1, 2], table.handle)
    torch.library.opcheck(table_pooled, args)
    with pytest.raises(ValueError, match=r"rows\[0\]=99 is not a row of this table"):
        table_pooled(anchor, torch.tensor([99, 0, 1]), found.inverse, offsets, None, [0], [3], table.handle)
    with pytest.raises(ValueError, match="runs"):
        table_pooled(anchor, found.rows, found.inverse, offsets, None, [0, 1], [1, 1], table.handle)


def test_a_fused_backward_declares_its_write_of_the_table():
    """With a fused optimizer, table_pooled's backward writes the rows: through recis::table_update,
    which declares the write (of HashTable.version, standing for the rows); opcheck fails an op
    whose schema hides a mutation."""
    from recis.embedding import HashTable
    from recis.embedding.ops import table_pooled, table_update

    table = HashTable(dim=4)
    found = table.lookup(torch.tensor([5, 9, 5, -3]))
    offsets, grad = torch.tensor([0, 1, 4]), torch.randn(2, 4)
    updates = []
    table.fused_backward = lambda *args: updates.append(args)
    args = (table.version, found.rows, found.inverse, offsets, None, [0], [2], grad, table.handle)
    torch.library.opcheck(table_update, args)
    before = int(table.version)
    anchor = torch.zeros(()).expand(len(found.rows), 4).requires_grad_()
    table_pooled(anchor, found.rows, found.inverse, offsets, None, [0], [2], table.handle).backward(grad)
    assert int(table.version) == before + 1 and anchor.grad is None
    assert torch.equal(updates[-1][6], grad)  # the output gradient reached the optimizer


@pytest.mark.parametrize("bad", [-1, 3, 2**40])
@pytest.mark.parametrize("at", [0, 4999])
def test_every_pooling_kernel_refuses_an_inverse_out_of_range(bad, at):
    """The kernels check inverse as they read it (chunk by chunk, no separate pass): a bad value in
    the first or the last of 5000 bags fails the forward, the backward and the fused update alike,
    naming the op and the first offender, and leaves the table's rows as they were."""
    from recis.core import kernels
    from recis.embedding import HashTable, Initializer

    table = HashTable(dim=4, initializer=Initializer.uniform(-1, 1))
    found = table.lookup(torch.tensor([5, 9, -3]))
    rows_before = table.gather(found.rows).clone()
    inverse = torch.arange(5000) % 3
    inverse[at] = bad
    offsets = torch.arange(5001)
    message = rf"inverse\[{at}\]={bad} is out of range for 3 unique rows"
    with pytest.raises(ValueError, match="HashTable.pool: " + message):
        table.pool(found.rows, inverse, offsets, None, "sum")
    with pytest.raises(ValueError, match="pooled_forward: " + message):
        kernels.embedding.pooled_forward(
            torch.randn(3, 4), inverse, offsets, None, ["sum"], [5000], torch.empty(5000, 4)
        )
    with pytest.raises(ValueError, match="pooled_backward: " + message):
        kernels.embedding.pooled_backward(
            torch.randn(5000, 4), inverse, offsets, None, ["sum"], [5000], torch.empty(3, 4)
        )
    with pytest.raises(ValueError, match="pooled_backward_update: " + message):
        kernels.optim.pooled_backward_update(
            table._c,
            kernels.optim.OptConfig("sgd"),
            [],
            found.rows,
            inverse,
            offsets,
            None,
            ["sum"],
            [5000],
            torch.randn(5000, 4),
        )
    torch.testing.assert_close(table.gather(found.rows), rows_before)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0, 1, 5]), st.integers(1, 4), st.booleans())
def test_table_pooled_batch_major_is_the_feature_major_result_side_by_side(seed, batch, features, weighted):
    """batch_major=True lays run t's bag i at row i, columns t * D: the same numbers, forward and
    backward (the gradient arrives in that layout), with mixed combiners and weights."""
    from recis.embedding import HashTable, Initializer
    from recis.embedding.ops import batch_major, feature_major, table_pooled

    gen = torch.Generator().manual_seed(seed)
    table = HashTable(dim=8, initializer=Initializer.uniform(-1, 1))
    lengths = torch.randint(0, 4, (features * batch,), generator=gen)
    ids = torch.randint(-(2**63), 2**63 - 1, (int(lengths.sum()),), generator=gen) % 7 - 3
    found = table.lookup(ids)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    weights = torch.rand(len(ids), generator=gen) if weighted else None
    codes, runs = [t % 3 for t in range(features)], [batch] * features
    anchor = torch.zeros(()).expand(len(found.rows), 8).requires_grad_()
    twin = torch.zeros(()).expand(len(found.rows), 8).requires_grad_()
    args = (found.rows, found.inverse, offsets, weights, codes, runs, table.handle)
    wide = table_pooled(anchor, *args, True)
    tall = table_pooled(twin, *args, False)
    assert wide.shape == (batch, features * 8)
    torch.testing.assert_close(wide, batch_major(tall, runs))
    torch.testing.assert_close(feature_major(wide, runs), tall)
    grad = torch.randn(wide.shape, generator=gen)
    wide.backward(grad)
    tall.backward(feature_major(grad, runs))
    torch.testing.assert_close(anchor.grad, twin.grad)
    if batch and features > 1:
        torch.library.opcheck(table_pooled, (anchor, *args, True))


def test_batch_major_needs_equal_runs():
    from recis.embedding import HashTable
    from recis.embedding.ops import table_pooled

    table = HashTable(dim=2)
    found = table.lookup(torch.tensor([1, 2, 3]))
    anchor = torch.zeros(()).expand(len(found.rows), 2)
    offsets = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="batch_major needs the same number of bags in every run, got 1 and 2"):
        table_pooled(anchor, found.rows, found.inverse, offsets, None, [0, 0], [1, 2], table.handle, True)


@given(st.lists(pooling_inputs(), min_size=1, max_size=4))
def test_runs_of_features_pool_like_each_feature_alone(parts):
    """Several features' bags in one call, each run with its own combiner, weighted or not."""
    from recis.embedding.ops import pooled_embedding_backward

    dim = parts[0][0].shape[1]
    parts = [(emb[:, :1].expand(-1, dim).contiguous(), *rest) for emb, *rest in parts]  # one width
    emb = torch.cat([p[0] for p in parts])  # (U, D): each part's rows after the previous ones'
    inverse, offsets, weights, names, runs = [], [torch.zeros(1, dtype=torch.int64)], [], [], []
    base_u = base_n = 0
    for e, inv, off, w, combiner in parts:
        inverse.append(inv + base_u)
        offsets.append(off[1:] + base_n)
        weights.append(torch.ones(len(inv)) if w is None else w)
        names.append(combiner)
        runs.append(len(off) - 1)
        base_u, base_n = base_u + len(e), base_n + len(inv)
    inverse, offsets, weights = torch.cat(inverse), torch.cat(offsets), torch.cat(weights)
    want = torch.cat([pooled_embedding_reference(*p) for p in parts])
    torch.testing.assert_close(pooled_embedding_reference(emb, inverse, offsets, weights, names, runs), want)
    grad = torch.randn_like(want)
    leaf = emb.clone().requires_grad_()
    pooled_embedding_reference(leaf, inverse, offsets, weights, names, runs).backward(grad)
    codes = [COMBINERS.index(c) for c in names]
    got = pooled_embedding_backward(grad, inverse, offsets, weights, codes, runs, len(emb))
    torch.testing.assert_close(got, leaf.grad, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0, 1, 3, 600]), st.integers(1, 3), st.booleans(), st.booleans())
def test_pool_keys_matches_lookup_then_pool(seed, batch, features, weighted, side_by_side):
    """The eval path pools straight from the keys (pieces of 256 bags, no de-duplication); it must
    equal a read-only lookup followed by pooling, with missing keys (zeros), negative and 64-bit
    IDs, empty bags, weights and mixed combiners, and leave the table unchanged."""
    from recis.embedding import HashTable, Initializer
    from recis.embedding.ops import batch_major

    gen = torch.Generator().manual_seed(seed)
    table = HashTable(dim=8, initializer=Initializer.uniform(-1, 1))
    for tag in range(features):
        table.add_logical_table(f"t{tag}")
    ids, lengths, known = [], [], []
    for _ in range(features):
        n = torch.randint(0, 4, (batch,), generator=gen)
        wide = torch.randint(-(2**63), 2**63 - 1, (int(n.sum()),), generator=gen)
        ids.append(torch.where(torch.rand(len(wide), generator=gen) < 0.5, wide % 50 - 25, wide))
        lengths.append(n)
        known.append(ids[-1][torch.rand(len(wide), generator=gen) < 0.7])  # ~30% of keys stay unknown
    table.lookup(known, tags=list(range(features)))
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(lengths).cumsum(0)])
    weights = torch.rand(int(offsets[-1]), generator=gen) if weighted else None
    combiners, runs = [COMBINERS[t % 3] for t in range(features)], [batch] * features
    before = table.stats()
    got = table.pool_keys(ids, list(range(features)), offsets, weights, combiners, runs, side_by_side)
    found = table.lookup(ids, insert=False, tags=list(range(features)), gather=False)
    want = table.pool(found.rows, found.inverse, offsets, weights, combiners, runs)
    torch.testing.assert_close(got, batch_major(want, runs) if side_by_side else want)
    after = table.stats()
    assert after["rows"] == before["rows"] and after["inserts"] == before["inserts"]
    assert after["lookups"] - before["lookups"] >= int(offsets[-1])


def test_pool_keys_bad_input():
    from recis.embedding import HashTable

    table = HashTable(dim=2)
    ids = [torch.tensor([1, 2, 3])]
    with pytest.raises(ValueError, match="offsets"):
        table.pool_keys(ids, [0], torch.tensor([0, 2]), None, "sum")  # covers 2 of 3 keys
    with pytest.raises(ValueError, match="weights"):
        table.pool_keys(ids, [0], torch.tensor([0, 3]), torch.ones(2), "sum")
    with pytest.raises(TypeError, match="IDs must be integers"):
        table.pool_keys([torch.ones(3)], [0], torch.tensor([0, 3]), None, "sum")
    with pytest.raises(ValueError, match=r"tags must be in \[0, 65535\], got 70000"):
        table.pool_keys(ids, [70000], torch.tensor([0, 3]), None, "sum")
    with pytest.raises(ValueError, match="got 1 ID arrays but 2 tags"):
        table.pool_keys(ids, [0, 1], torch.tensor([0, 3]), None, "sum")
    assert table.pool_keys(
        [torch.zeros(0, dtype=torch.int64)], [0], torch.zeros(1, dtype=torch.int64), None, "sum"
    ).shape == (0, 2)
