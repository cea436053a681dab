"""Pruning operations on a small random BERT: masks by hooks against the sliced
model, parameter counts against the sliced model, rewiring, saving and loading."""

from __future__ import annotations

import json
import os
import random

import pytest

if os.environ.get("CI"):  # CI installs the nas extra: missing there is a broken install
    import torch
    import transformers
else:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

from mlpilot.tools import pruning
from mlpilot.tools.subnets import SubNet, encoder_params, sample


@pytest.fixture(scope="module")
def model() -> pruning.TextClassifier:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    m = pruning.TextClassifier(config, num_labels=3)
    m.eval()
    return m


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (5, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding is handled the same way by all three forms
    mask[3, 4:] = 0
    return ids, mask


NETS = [
    SubNet((True, True, True, True), (4, 4, 4, 4), (64, 64, 64, 64)),
    SubNet((True, False, True, True), (2, 4, 1, 3), (64, 10, 1, 33)),
    SubNet((False, False, False, True), (1, 1, 1, 1), (1, 1, 1, 1)),
    SubNet((True, True, False, False), (3, 2, 4, 4), (5, 64, 64, 64)),
]


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.describe())
def test_masks_by_hooks_equal_the_sliced_model(model, batch, net: SubNet) -> None:
    ids, mask = batch
    with torch.no_grad():
        full = model(ids, mask)
        with pruning.masked(model, net):
            masked = model(ids, mask)
        sliced = pruning.slice_model(model, net)(ids, mask)
        after = model(ids, mask)
    torch.testing.assert_close(masked, sliced, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, full)  # the hooks and the layer list are restored
    if net != NETS[0]:
        assert (masked - full).abs().max() > 1e-4  # the mask does change the output


def test_masks_by_hooks_on_random_subnets(model, batch) -> None:
    ids, mask = batch
    rng = random.Random(7)
    shape = pruning.shape_of(model)
    for space in ("layer", "small", "medium"):
        for _ in range(4):
            net = sample(space, shape, rng)
            with torch.no_grad():
                with pruning.masked(model, net):
                    a = model(ids, mask)
                b = pruning.slice_model(model, net)(ids, mask)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.describe())
def test_parameter_count_matches_the_sliced_model(model, net: SubNet) -> None:
    shape = pruning.shape_of(model)
    counts = pruning.param_counts(pruning.slice_model(model, net))
    assert counts["encoder"] == encoder_params(shape, net)
    assert counts["embeddings"] == pruning.param_counts(model)["embeddings"]


def test_rewire_keeps_the_function_and_orders_by_importance(model, batch) -> None:
    import copy

    ids, mask = batch
    m = copy.deepcopy(model)
    labels = torch.tensor([0, 1, 2, 0, 1])
    heads, units = pruning.importance(m, [(ids, mask, labels)])
    assert heads.shape == (4, 4) and units.shape == (4, 64)
    with torch.no_grad():
        before = m(ids, mask)
    pruning.rewire(m, heads, units)
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask), before, atol=1e-5, rtol=1e-5)
    heads_after, _ = pruning.importance(m, [(ids, mask, labels)])
    for layer in range(4):  # the first head is now the most important one
        assert torch.all(heads_after[layer][:-1] >= heads_after[layer][1:] - 1e-6)


def test_saved_pruned_model_loads_smaller_and_equal(model, batch, tmp_path) -> None:
    ids, mask = batch
    net = NETS[1]
    small = pruning.slice_model(model, net)
    full_dir = pruning.save_classifier(model, tmp_path / "full", ["a", "b", "c"], tmp_path)
    small_dir = pruning.save_classifier(small, tmp_path / "small", ["a", "b", "c"], tmp_path)
    assert (small_dir / "model.safetensors").stat().st_size < (
        full_dir / "model.safetensors"
    ).stat().st_size
    arch = json.loads((small_dir / "arch.json").read_text())
    assert arch["heads"] == [2, 1, 3] and arch["units"] == [64, 1, 33]
    loaded, meta = pruning.load_classifier(small_dir)
    assert meta["labels"] == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), small(ids, mask))
    assert pruning.param_counts(loaded) == pruning.param_counts(small)


def test_polishing_with_a_teacher_learns_the_teachers_predictions(
    model, batch, tmp_path, monkeypatch
) -> None:
    """The job's fine-tuning with ``distill`` learns from the teacher's softened
    predictions: trained on labels that disagree with the teacher, the distilled
    student ends much closer to the teacher than the one taught by the labels alone."""
    import copy
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(pruning.__file__).parent))  # as in the job
    monkeypatch.setitem(sys.modules, "pruning", pruning)
    nas_job = importlib.import_module("nas_job")
    monkeypatch.chdir(tmp_path)
    ids, mask = batch
    ids, mask = ids.repeat(4, 1), mask.repeat(4, 1)
    teacher = copy.deepcopy(model)
    pruning.save_classifier(teacher, "teacher", [0, 1, 2], tmp_path)
    labels = torch.zeros(len(ids), dtype=torch.long)  # the teacher does not say 0
    with torch.no_grad():
        taught = torch.softmax(teacher(ids, mask), -1)
    data = {"fit": {"input_ids": ids, "attention_mask": mask, "labels": labels}}

    def gap(distill: bool) -> float:
        torch.manual_seed(0)
        student = pruning.slice_model(copy.deepcopy(model), NETS[3])
        config = {
            "phase": "finetune",
            "seed": 0,
            "batch_size": 10,
            "train": {
                "step0": 0,
                "steps": 30,
                "total": 30,
                "lr": 3e-3,
                "warmup": 0.1,
                "temperature": 2.0,
                "distill": distill,
            },
        }
        Path("optimizer.pt").unlink(missing_ok=True)
        nas_job.train(student, config, data, torch.device("cpu"), {})
        student.eval()
        with torch.no_grad():
            probs = torch.softmax(student(ids, mask), -1)
        return float((probs - taught).abs().sum(-1).mean())

    assert gap(True) < 0.5 * gap(False)
