"""Tiny data and models shared by the trainer tests."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recis.embedding import EmbeddingEngine, EmbeddingSpec
from recis.optim import SparseAdam
from recis.train.models import DIN


def write_rows(path, n, seed=0):
    """n rows: user, item, hist (list<int64>), click (0/1 planted on item parity), rating (float)."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, 30, (n,), generator=g)
    items = torch.randint(0, 50, (n,), generator=g)
    lengths = torch.randint(0, 5, (n,), generator=g)
    hist = [torch.randint(0, 50, (int(k),), generator=g).tolist() for k in lengths]
    click = ((items % 2 == 0) ^ (torch.rand(n, generator=g) < 0.1)).int()
    table = pa.table(
        {
            "user": users.numpy(),
            "item": items.numpy(),
            "hist": pa.array(hist, pa.list_(pa.int64())),
            "click": click.numpy(),
            "rating": (items.float() / 50).numpy(),
        }
    )
    pq.write_table(table, path, row_group_size=64)
    return path


@pytest.fixture
def data_file(tmp_path):
    return str(write_rows(tmp_path / "train.parquet", 256))


def make_din(heads=("click",), dim=4, dropout=0.1):
    emb = EmbeddingEngine(
        {
            "user": EmbeddingSpec(dim),
            "item": EmbeddingSpec(dim, table="items"),
            "hist": EmbeddingSpec(dim, table="items", combiner=None, max_len=4),
        }
    )
    torch.manual_seed(0)
    return DIN(emb, {"hist": "item"}, heads=heads, hidden=(8,), attention_hidden=(8,), dropout=dropout)


def optimizers(model, lr=0.01):
    return SparseAdam(model, lr=lr), torch.optim.Adam(model.parameters(), lr=lr)
