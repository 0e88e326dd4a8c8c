"""Serving bundles end to end: trained runs (the demo's DIN, and DIN on MovieLens with hashed string
genres) exported as fp32, fp16, bf16 and int8 bundles and scored by the Predictor, recis-predict and
recis-serve, against the trainer's own eval predictions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch._inductor import aoti_load_package

from recis.serve import BundleError, Predictor, RequestError, bundle
from recis.serve.cli import make_server, predict_main
from recis.train import config as cfgmod
from recis.train import demo
from recis.train.cli import run_config
from recis.train.export import _round_weights, eval_predictions, export_bundle, load_config, load_trained
from recis.train.metrics import auc_score

pytestmark = pytest.mark.slow  # trains two models and exports eight bundles

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small"
DTYPES = ("fp32", "fp16", "bf16", "int8")


def train(config: dict) -> Path:
    config["train"] |= {"progress": False, "checkpoint_every": 10_000}
    config["train"].pop("eval_every", None)
    run_config(config)
    (checkpoint,) = sorted((Path(config["output_dir"]) / "checkpoints").glob("step-*"))[-1:]
    return checkpoint


@pytest.fixture(scope="module", params=["demo", "movielens"])
def run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "demo":
        demo.generate(root / "data", rows=12_000, test_rows=4000, users=800, items=2000, files=1)
        checkpoint = train(demo.config(str(root / "data"), str(root / "run"), batch_size=256))
    else:
        if not MOVIELENS.is_dir():
            pytest.skip(f"no MovieLens data at {MOVIELENS}")
        tools = ROOT / "tools" / "data"
        subprocess.run([sys.executable, tools / "convert.py", "movielens", MOVIELENS, root / "ml.parquet"], check=True)
        subprocess.run([sys.executable, tools / "split_by_time.py", root / "ml.parquet", root], check=True)
        config = cfgmod.load(str(ROOT / "examples" / "movielens.toml"), [])
        config["data"] |= {"train": str(root / "train.parquet"), "eval": str(root / "test.parquet")}
        config["output_dir"] = str(root / "run")
        config.pop("baseline")
        checkpoint = train(config)
    bundles = {dtype: export_bundle(checkpoint, root / f"bundle-{dtype}", dtype).parent for dtype in DTYPES}
    return checkpoint, bundles, eval_predictions(load_trained(checkpoint))


def test_bundles_score_as_the_trainer(run):
    checkpoint, bundles, (batches, want, labels) = run
    auc = {}
    for dtype, path in bundles.items():
        predictor = Predictor(path)
        got = torch.cat([predictor.predict(b)["label"] for b in batches])
        if dtype == "fp32":
            assert float((got - want).abs().max()) <= 1e-5
        auc[dtype] = auc_score(got, labels)
    assert abs(auc["fp16"] - auc["fp32"]) <= 0.001 and abs(auc["bf16"] - auc["fp32"]) <= 0.001, auc
    assert abs(auc["int8"] - auc["fp32"]) <= 0.002, auc
    manifest = json.loads((bundles["fp32"] / "manifest.json").read_text())
    assert manifest["source"]["step"] == int(checkpoint.name.split("-")[1])
    assert manifest["check"]["max_abs_diff"]["label"] <= 1e-5


def test_aot_compiled_dense_part_scores_as_the_portable_one(run, tmp_path):
    checkpoint, bundles, (batches, want, _) = run
    if "genres" in json.loads((bundles["fp32"] / "manifest.json").read_text())["inputs"]:
        pytest.skip("one AOTInductor build (about 10 s) is enough: the demo's")
    path = export_bundle(checkpoint, tmp_path / "aot", "fp32", aot=True).parent
    compiled, portable = Predictor(path), Predictor(path, compiled=False)
    assert not isinstance(compiled.program, torch.nn.Module) and isinstance(portable.program, torch.nn.Module)
    got = torch.cat([compiled.predict(b)["label"] for b in batches])
    assert float((got - want).abs().max()) <= 1e-5
    # The Predictor calls the build with its specs parsed once, not through the build's own call;
    # names that disagree with the build's input spec keep the build's own call.
    entry = json.loads((path / "manifest.json").read_text())["program"]
    own = aoti_load_package(str(path / entry["compiled"]))
    assert not isinstance(compiled.program, type(own))
    for swapped in ({**entry, "pooled": entry["pooled"][::-1]}, {**entry, "dense": ["price"]}):
        assert bundle._spec_once(own, swapped) is own


def test_narrow_rows_shrink_the_tables(run):
    _, bundles, _ = run
    table_bytes = {}
    for dtype, path in bundles.items():
        files = json.loads((path / "manifest.json").read_text())["files"]
        table_bytes[dtype] = sum(f["bytes"] for name, f in files.items() if name.startswith("tables/"))
    dim = json.loads((bundles["fp32"] / "manifest.json").read_text())["tables"][0]["dim"]
    # per row: 4-byte IDs (they fit in int32 here) plus the row; int8 adds a float32 scale and bias
    assert table_bytes["fp16"] / table_bytes["fp32"] <= (4 + 2 * dim) / (4 + 4 * dim) + 0.01
    assert table_bytes["int8"] / table_bytes["fp32"] <= (4 + dim + 8) / (4 + 4 * dim) + 0.01


def test_narrow_bundles_round_and_deflate_the_dense_program(run):
    _, bundles, _ = run
    weights = {}
    for dtype, path in bundles.items():
        with zipfile.ZipFile(path / "dense.pt2") as archive:
            assert {e.compress_type for e in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        weights[dtype] = torch.export.load(str(path / "dense.pt2")).state_dict
    narrow = {"fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.bfloat16}
    for dtype, kept in narrow.items():
        for name, w in weights[dtype].items():
            assert w.dtype == torch.float32 and torch.equal(w, w.to(kept).float()), (dtype, name)
    assert any(not torch.equal(w, w.half().float()) for w in weights["fp32"].values())  # fp32 keeps its own
    files = {d: json.loads((p / "manifest.json").read_text())["files"] for d, p in bundles.items()}
    size = {d: sum(f["bytes"] for f in fs.values()) for d, fs in files.items()}
    assert files["fp16"]["dense.pt2"]["bytes"] < 0.8 * files["fp32"]["dense.pt2"]["bytes"]
    if "genres" in json.loads((bundles["fp32"] / "manifest.json").read_text())["inputs"]:  # MovieLens
        assert size["fp16"] <= 0.55 * size["fp32"], size  # 7.4k rows of D = 16 beside the program


def test_rounding_leaves_the_feature_transforms_alone():
    model = torch.nn.Module()
    model.features, model.top = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    model.top.register_buffer("scale", torch.rand(3))
    model.top.register_buffer("huge", torch.tensor([1.0, 1e6]))  # beyond float16: kept as it is
    before = {n: t.clone() for n, t in model.state_dict().items()}
    _round_weights(model, torch.float16)
    for name, t in model.state_dict().items():
        kept = name.startswith("features.") or name == "top.huge"
        assert torch.equal(t, before[name] if kept else before[name].half().float()) and t.dtype == torch.float32
    assert not torch.equal(model.top.weight, before["top.weight"])


def first_rows(checkpoint: Path, columns: list[str], n: int) -> list[dict]:
    """The eval data's first rows as a client sends them: {column: number, string or list}."""
    source = Path(load_config(checkpoint, None)["data"]["eval"])
    file = sorted(source.glob("*.parquet"))[0] if source.is_dir() else source
    return pq.read_table(file, columns=columns).slice(0, n).to_pylist()


def test_json_rows_and_unknown_ids(run):
    checkpoint, bundles, (batches, want, _) = run
    predictor = Predictor(bundles["fp32"])
    columns = list(predictor.inputs)
    rows = first_rows(checkpoint, columns, 5)
    torch.testing.assert_close(predictor.predict_rows(rows)["label"], want[:5], rtol=0, atol=1e-6)
    before = predictor.stats()["unknown"]
    fresh = lambda v: [10**15 + 7] * len(v) if isinstance(v, list) else 10**15 + 7
    predictor.predict_rows([{c: v if c == "genres" else fresh(v) for c, v in rows[0].items()}])
    assert predictor.stats()["unknown"] > before
    with pytest.raises(RequestError, match=r"unknown columns \['colour'\]"):
        predictor.predict_rows([rows[0] | {"colour": 3}])
    ids = next(c for c, kind in predictor.inputs.items() if kind == "int64")
    with pytest.raises(RequestError, match=f"column '{ids}' \\(int64\\)"):
        predictor.predict_rows([rows[0] | {ids: "seven"}])
    with pytest.raises(RequestError, match=f"missing columns \\['{columns[0]}'\\]"):
        predictor.predict({c: v for c, v in batches[0].items() if c != columns[0]})


def test_recis_predict_writes_predictions_beside_kept_columns(run, tmp_path):
    checkpoint, bundles, (_, want, _) = run
    config = load_config(checkpoint, None)
    source = config["data"]["eval"]
    keep = json.loads((bundles["fp32"] / "manifest.json").read_text())["program"]["pooled"][0]
    assert predict_main([str(bundles["fp32"]), source, str(tmp_path / "out.parquet"), "--keep", keep]) == 0
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == [keep, "label"] and out.num_rows == len(want)
    assert float((torch.tensor(out.column("label").to_numpy()) - want).abs().max()) <= 1e-5
    assert predict_main([str(bundles["fp32"]), source, str(tmp_path / "x.parquet"), "--keep", "nope"]) == 2


def test_http_endpoint_answers_and_refuses_bad_requests(run):
    checkpoint, bundles, _ = run
    predictor = Predictor(bundles["int8"])
    server = make_server(predictor, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        columns = list(predictor.inputs)
        row = first_rows(checkpoint, columns, 1)[0]
        status, body = post(json.dumps({"instances": [row, row]}).encode())
        assert status == 200 and len(body["predictions"]["label"]) == 2
        assert post(b"{not json")[0] == 400
        status, body = post(json.dumps({"instances": [row | {"colour": 1}]}).encode())
        assert status == 400 and "unknown columns ['colour']" in body["error"]
        ids = next(c for c, kind in predictor.inputs.items() if kind == "int64")
        status, body = post(json.dumps({"instances": [{**row, ids: "seven"}]}).encode())
        assert status == 400 and ids in body["error"]
        assert post(json.dumps({"rows": []}).encode())[0] == 400
        with urllib.request.urlopen(f"{url}/health") as r:
            health = json.loads(r.read())
        assert health["status"] == "ok" and health["requests"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_damaged_bundles_fail_naming_the_file(run, tmp_path):
    _, bundles, _ = run
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundles["fp16"], copy)
    table = next((copy / "tables").iterdir())
    data = bytearray(table.read_bytes())
    data[-3] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{table.name} is damaged"):
        Predictor(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["program"]["ragged"] = manifest["program"]["sequences"][:1]  # trained padded
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"the program takes ragged sequences .* the embeddings make"):
        Predictor(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not a serving bundle"):
        Predictor(copy)


def test_ragged_histories_export_and_score_as_the_trainer(tmp_path):
    """A model trained with ragged histories (ragged=True) serves them ragged: the dense program takes
    each history's real events and offsets, for any batch and event count (none at all included),
    portable and AOTInductor-compiled alike."""
    demo.generate(tmp_path / "data", rows=3000, test_rows=1000, users=300, items=800, files=1)
    config = demo.config(str(tmp_path / "data"), str(tmp_path / "run"), batch_size=256)
    for history in ("hist_item_ids", "hist_category_ids"):
        config["embeddings"][history]["ragged"] = True
    checkpoint = train(config)
    path = export_bundle(checkpoint, tmp_path / "bundle", "fp32", aot=True).parent
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["program"]["ragged"] == ["hist_item_ids", "hist_category_ids"]
    batches, want, _ = eval_predictions(load_trained(checkpoint))
    rows = [
        {"user_id": 3, "item_id": 5, "category_id": 1, "hist_item_ids": [], "hist_category_ids": []},
        {"user_id": 4, "item_id": 6, "category_id": 2, "hist_item_ids": [6, 9], "hist_category_ids": [2, 1]},
    ]
    scored = []
    for predictor in (Predictor(path), Predictor(path, compiled=False)):
        got = torch.cat([predictor.predict(b)["label"] for b in batches])
        assert float((got - want).abs().max()) <= 1e-5
        empty = predictor.predict_rows(rows[:1])["label"]  # one row, no events in the whole batch
        scored.append(torch.cat([empty, predictor.predict_rows(rows)["label"]]))
    assert scored[0].shape == (3,) and bool(torch.isfinite(scored[0]).all())
    torch.testing.assert_close(scored[0], scored[1], rtol=0.0, atol=1e-5)  # compiled == portable
    assert float(scored[0][0]) == pytest.approx(float(scored[0][1]), abs=1e-6)  # the row alone or in a batch
