"""benchmarks/bench_matchseg.py on a tiny configuration: the JSON report of issue 14 (both models' figures, ratios
from the reported medians, parameter counts, the retrieval section), written atomically, and the retrieval it times
checked against a brute force."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from networks import create_model, model_entry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_matchseg  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

IMG_SIZE, SHOTS, ITEMS, DIMS = 32, 2, 200, (64, 1764)
TINY = ["--img_size", str(IMG_SIZE), "--batch", "1", "--shots", str(SHOTS), "--repeats", "1", "--warmup", "0",
        "--device", "cpu", "--threads", "1", "--retrieval_items", str(ITEMS),
        "--retrieval_dims", *map(str, DIMS)]
FIGURES = {"params", "train_step_s", "infer_s", "peak_mem_mb"}


def brute_force_topk(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Same-list cosine top-k in float64: similarity descending, ties by index ascending, the query excluded."""
    unit = embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of main: the returned report, the JSON path, the renames onto it and the retrievals it timed."""
    path = tmp_path_factory.mktemp("bench") / "out" / "report.json"
    path.parent.mkdir()
    path.write_text("old")
    renames, retrievals, recipes = [], [], []
    real_replace, real_retrieve, real_steps_for = os.replace, bench_matchseg.retrieve, bench_matchseg.steps_for

    def replace(src, dst):
        if Path(dst) == path:  # at the rename: the whole new report is in the temporary file, the old one in place
            renames.append((Path(src), json.loads(Path(src).read_text()), path.read_text()))
        real_replace(src, dst)

    def retrieve(embeddings, k, device):
        result = real_retrieve(embeddings, k, device)
        retrievals.append((embeddings.copy(), k, result[0].clone()))
        return result

    def steps_for(*args):
        recipes.append(args[5])
        return real_steps_for(*args)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        patch.setattr(bench_matchseg, "retrieve", retrieve)
        patch.setattr(bench_matchseg, "steps_for", steps_for)
        returned = bench_matchseg.main([*TINY, "--json", str(path)])
    torch.set_num_threads(threads)
    return dict(report=returned, path=path, renames=renames, retrievals=retrievals, recipes=recipes)


def test_report_structure(run):
    report = json.loads(run["path"].read_text())
    assert report == run["report"]
    assert set(report) == {"config", "matchseg", "universeg", "ratio", "retrieval"}
    config = report["config"]
    assert (config["img_size"], config["batch"], config["shots"], config["device"]) == (IMG_SIZE, 1, SHOTS, "cpu")
    assert config["threads"] == 1 and config["amp"] == "none" and config["gpu"] is None
    for name in bench_matchseg.MODELS:
        assert set(report[name]) == FIGURES
        assert all(report[name][key] > 0 for key in FIGURES)
    assert set(report["ratio"]) == FIGURES


def test_ratios_are_quotients_of_the_reported_figures(run):
    report = run["report"]
    for key, ratio in report["ratio"].items():
        assert ratio == pytest.approx(report["matchseg"][key] / report["universeg"][key], rel=1e-12)


def test_params_match_fresh_models(run):
    for name, in_chans in (("matchseg", 3), ("universeg", 1)):
        model = create_model(name, num_classes=2, in_chans=in_chans, img_size=IMG_SIZE)
        assert run["report"][name]["params"] == sum(p.numel() for p in model.parameters())
    # Joint Attention adds parameters; the backbone is UniverSeg's released one (the same at any input size)
    assert run["report"]["universeg"]["params"] == 1_182_785 < run["report"]["matchseg"]["params"]


def test_json_written_atomically(run):
    assert len(run["renames"]) == 1
    temporary, content, old = run["renames"][0]
    assert content == run["report"] and old == "old"
    assert temporary != run["path"] and temporary.parent == run["path"].parent and not temporary.exists()
    assert not list(run["path"].parent.glob("*.tmp"))


def test_retrieval_section(run):
    retrieval = run["report"]["retrieval"]
    assert (retrieval["device"], retrieval["items"], retrieval["k"], retrieval["same_list"]) == ("cpu", ITEMS,
                                                                                                 SHOTS, True)
    assert set(retrieval["dims"]) == {str(d) for d in DIMS}
    for figures in retrieval["dims"].values():
        assert figures["topk_s"] > 0 and figures["cache_load_s"] > 0 and figures["verified_rows"] == 8


def test_timed_retrieval_is_correct(run):
    """Every timed top-k ran on that dimension's N x D embeddings and returned the brute force's indices."""
    timed = run["retrievals"]
    assert [embeddings.shape for embeddings, _, _ in timed] == [(ITEMS, d) for d in DIMS]  # warm-up 0, 1 repeat
    for (embeddings, k, indices), dim in zip(timed, DIMS):
        assert k == SHOTS
        np.testing.assert_array_equal(embeddings, bench_matchseg.retrieval_embeddings(ITEMS, dim))
        np.testing.assert_array_equal(indices.numpy(), brute_force_topk(embeddings, SHOTS))


def test_retrieval_with_ties_and_larger_k_matches_brute_force():
    embeddings = bench_matchseg.retrieval_embeddings(60, 16, seed=3)
    embeddings[10:20] = embeddings[5]  # exact ties: the lower index first
    indices, _ = bench_matchseg.retrieve(embeddings, 8, "cpu")
    np.testing.assert_array_equal(indices.numpy(), brute_force_topk(embeddings, 8))


def test_verify_topk_catches_wrong_picks():
    embeddings = bench_matchseg.retrieval_embeddings(50, 16)
    indices, sims = bench_matchseg.retrieve(embeddings, 4, "cpu")
    bench_matchseg.verify_topk(embeddings, indices, sims, range(50))  # the right answer passes
    wrong = indices.clone()
    wrong[7, 3] = int(np.setdiff1d(np.arange(50), [7, *indices[7].tolist()])[-1])
    selfish = indices.clone()
    selfish[7, 0] = 7
    for bad in (wrong, selfish, indices.flip(1)):
        with pytest.raises(AssertionError):
            bench_matchseg.verify_topk(embeddings, bad, sims, [7])


def test_retrieval_items_must_exceed_k(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_matchseg.main([*TINY, "--retrieval_items", str(SHOTS)])
    assert exit_info.value.code == 2 and "--retrieval_items" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["matchseg", "universeg"])
def test_the_timed_train_step_takes_the_step_of_the_models_registered_recipe(name, run):
    """Each model's steps are built with its registered recipe; one timed train step on a float64 module equals a
    plain (unfused) step of that optimiser, Adam with lr 1e-4 and no weight decay (AdamW's decay alone, lr * 1e-4
    * weight, would differ by ~1e-8 of each weight)."""
    recipe = model_entry(name).recipe
    assert recipe in run["recipes"] and len(run["recipes"]) == 2
    assert (recipe.optimizer, recipe.weight_decay) == ("adam", 0.0)
    torch.manual_seed(0)
    timed = torch.nn.Linear(4, 3).double()
    expected = torch.nn.Linear(4, 3).double()
    expected.load_state_dict(timed.state_dict())
    inputs = torch.randn(5, 4, dtype=torch.float64)
    args = bench_matchseg.parse_args(["--device", "cpu"])
    train_step, _ = bench_matchseg.steps_for(timed, lambda m: m(inputs).square().mean(), lambda m: m(inputs), args,
                                             torch.device("cpu"), recipe)
    train_step()
    optimizer = torch.optim.Adam(expected.parameters(), lr=recipe.base_lr, weight_decay=0.0, foreach=False)
    expected(inputs).square().mean().backward()
    optimizer.step()
    for name_, value in expected.state_dict().items():
        torch.testing.assert_close(timed.state_dict()[name_], value, rtol=0, atol=1e-15)
