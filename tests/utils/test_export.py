"""export.py (utils/export.py): the exported network's logits equal the eager model's, checked here independently of
the export's own check (onnxruntime / torch.export.load on new inputs, another batch size); the JSON describes the
input, the classes and the preprocessing of the checkpoint's data set; an exporter's refusal, a parity failure and an
existing output are each one error line with nothing written.

Tiny random models saved as training would (``args.dataset``): an smp U-Net on ISIC 2018 (ONNX) and MatchSeg with a
fixed k = 2 on BUSI (torch.export). Sim-MPNet's export (minutes on a CPU) is measured in docs/api.md, not here.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from datasets import get_dataset
from export import main as export_main
from tests.test_api import tiny
from tests.utils.test_predict import save_model
from utils import export as export_module
from utils.checkpoint import model_checkpoint, save_checkpoint
from utils.export import NetworkLogits, export_network

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export")
    torch.set_num_threads(1)
    unet = save_model(tiny("unet", 3, 2, seed=2), root / "unet.pth", "isic2018")
    state = model_checkpoint(tiny("matchseg", 3, 2))
    state["args"] = {"dataset": "busi", "support_size": 3}
    save_checkpoint(root / "matchseg.pth", state)
    return {"unet": unet, "matchseg": root / "matchseg.pth"}


def eager_logits(model: torch.nn.Module, *inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return NetworkLogits(model, ("support_images", "support_labels")[:len(inputs) - 1])(*inputs).numpy()


def assert_close(exported: np.ndarray, eager: np.ndarray) -> None:
    """The stated tolerance, written out: max |difference| <= 1e-3 of the largest |logit| (at least 1)."""
    assert exported.shape == eager.shape
    assert np.abs(exported.astype(np.float64) - eager).max() <= 1e-3 * max(1.0, np.abs(eager).max())


def test_onnx_export_runs_in_onnxruntime_as_the_eager_model(checkpoints, tmp_path, capsys):
    out = tmp_path / "unet.onnx"
    assert export_main(["--checkpoint", str(checkpoints["unet"]), "--format", "onnx", "--out", str(out)]) == 0
    assert "argmax agreement 100" in capsys.readouterr().out
    record = json.loads((tmp_path / "unet.onnx.json").read_text())
    spec = get_dataset("isic2018")
    assert record["input"] == {"name": "image", "shape": ["batch", 3, 64, 64], "dtype": "float32", "size": 64,
                               "channels": 3}
    assert record["classes"] == ["background", *spec.class_names] and record["dataset"] == "isic2018"
    assert record["preprocessing"]["data_normalization"]["mean"] == list(spec.normalization[0])
    assert record["parity"]["passed"] and record["parity"]["max_abs_difference"] < 1e-3
    model = tiny("unet", 3, 2, seed=2)
    image = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))  # a batch size not exported
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"image": image.numpy()})[0]
    eager = eager_logits(model, image)
    assert_close(exported, eager)
    assert exported.argmax(1).min() != exported.argmax(1).max()  # both classes: logits that can disagree


def test_torch_export_of_a_support_set_model_with_fixed_k(checkpoints, tmp_path):
    out = tmp_path / "matchseg.pt2"
    assert export_main(["--checkpoint", str(checkpoints["matchseg"]), "--format", "torch_export", "--out",
                        str(out), "--support_size", "2", "--batch_size", "3"]) == 0
    record = json.loads((tmp_path / "matchseg.pt2.json").read_text())
    assert record["support_size"] == 2 and record["context"]["support_images"]["shape"] == ["batch", 2, 3, 64, 64]
    assert record["context"]["support_labels"]["dtype"] == "int64"
    generator = torch.Generator().manual_seed(9)
    batch = 3 if "static" in record["exporter"] else 1  # a static program takes the --batch_size it was made with
    assert record["parity"]["inputs"][0]["image"] == [3, 3, 64, 64]
    inputs = (torch.randn(batch, 3, 64, 64, generator=generator), torch.randn(batch, 2, 3, 64, 64, generator=generator),
              torch.randint(0, 2, (batch, 2, 64, 64), generator=generator))
    program = torch.export.load(str(out))
    with torch.no_grad():
        exported = program.module()(*inputs).numpy()
    assert_close(exported, eager_logits(tiny("matchseg", 3, 2), *inputs))


class Eigenvalues(torch.nn.Module):
    """A network with an operator ONNX has no translation for (complex eigenvalues)."""

    def forward_batch(self, batch: dict) -> torch.Tensor:
        return torch.linalg.eigvals(batch["image"]).real


def test_an_operator_the_exporter_refuses_is_one_line_and_nothing_is_written(tmp_path):
    out = tmp_path / "eig.onnx"
    inputs = {"image": torch.randn(1, 2, 4, 4)}
    with pytest.raises(RuntimeError) as caught:
        export_network("onnx", NetworkLogits(Eigenvalues()), inputs, out, [inputs], "eigen_net")
    message = str(caught.value)
    assert message.startswith("eigen_net cannot be exported to onnx: ") and "\n" not in message
    assert "eigvals" in message and not list(tmp_path.iterdir())


def test_a_parity_failure_and_an_existing_output_are_refused(checkpoints, tmp_path, capsys, monkeypatch):
    out = tmp_path / "unet.onnx"
    run = export_module.run_exported
    monkeypatch.setattr(export_module, "run_exported", lambda *args: run(*args) + 1e-2)
    assert export_main(["--checkpoint", str(checkpoints["unet"]), "--format", "onnx", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "differs from the eager model" in error and not list(tmp_path.iterdir())
    monkeypatch.undo()
    out.write_bytes(b"a user's file")
    assert export_main(["--checkpoint", str(checkpoints["unet"]), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"a user's file"
    assert export_main(["--checkpoint", str(checkpoints["unet"]), "--format", "onnx", "--out", str(tmp_path / "k.onnx"),
                        "--support_size", "2"]) == 2
    assert "unet takes no support set" in capsys.readouterr().err and not (tmp_path / "k.onnx").exists()
