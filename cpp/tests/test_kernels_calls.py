"""`recis.core.kernels`: tensors reach the kernels as DLPack capsules when they can, and as tensors
(converted by nanobind) when they cannot; both give the same results."""

import pytest
import torch

from recis.core import kernels


def test_capsules_and_converted_tensors_give_the_same_result(monkeypatch):
    made = []
    monkeypatch.setattr(kernels, "_to_dlpack", lambda t: made.append(t) or torch.utils.dlpack.to_dlpack(t))
    rows = torch.tensor([5, 2, 5, -1, 7])
    unique, index = kernels.embedding.unique_rows(rows, 8)  # contiguous int64: passed as a capsule
    assert len(made) == 1 and made[0] is rows
    assert unique.tolist() == [2, 5, 7, -1] and index.tolist() == [1, 0, 1, 3, 2]
    for other in (rows.to(torch.int32), torch.stack([rows, rows], 1)[:, 0]):  # converted: int32; a strided view
        got = kernels.embedding.unique_rows(other, 8)  # int32: capsule refused, then the tensor converted
        assert got[0].tolist() == unique.tolist() and got[1].tolist() == index.tolist()


def test_outputs_written_through_a_capsule_land_in_the_tensor():
    emb = torch.randn(3, 4)
    out = torch.full((2, 4), 7.0)
    kernels.embedding.pooled_forward(emb, torch.tensor([0, 2, 1]), torch.tensor([0, 2, 3]), None, ["sum"], [2], out)
    torch.testing.assert_close(out, torch.stack([emb[0] + emb[2], emb[1]]))


def test_arguments_of_the_wrong_kind_still_raise_type_error():
    with pytest.raises(TypeError):
        kernels.embedding.unique_rows(torch.zeros(2, 2, dtype=torch.int64), 8)  # (2, 2) where (n,) is expected
