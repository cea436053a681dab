"""The NAS pruning agent's sandbox job: fine-tune, train the super-network, or
evaluate sub-networks. Standalone: imports nothing from mlpilot; ``pruning.py`` is
handed in next to it
(with ``subnets.py``).

Inputs in the job directory:
    config.json   {"phase": "finetune" | "supernet" | "evaluate" | "slice", "seed",
                   "max_length", "batch_size", "num_labels", "labels" (the
                   class values, saved with the model), "device",
                   "train": {"step0", "steps", "total", "lr", "warmup",
                             "space", "temperature", "random", "rewire"},
                   "subnets": [SubNet dicts], "latency_examples"}
    data.parquet  "text", "label" (class index) and "part" ("fit" rows train,
                  "val" rows are predicted), split by the host
    model/        the starting classifier (``pruning.save_classifier``'s files), or
                  a pretrained BERT encoder directory when ``phase`` is "finetune"
                  and ``config["pretrained"]`` is true
    optimizer.pt  the optimiser's state from the previous chunk (optional)
    teacher/      a classifier to distil from (optional; a fine-tuning phase with
                  ``train["distill"]`` learns from its softened predictions as well
                  as from the labels: the polish of a sliced sub-network)

Training runs ``steps`` of ``total`` steps (a chunk; the host calls again for the
next), with the batch order and the learning-rate schedule decided by the global
step, so chunks add up to one run. The super-network is trained with the sandwich
rule: per batch the whole network learns from the labels, and the smallest and
``random`` random sub-networks learn from the whole network's softened
predictions (in-place distillation at ``temperature``).

Outputs:
    out/          the trained classifier (training phases)
    optimizer.pt  the optimiser's state, for the next chunk
    val_probs.npy the trained model's class probabilities on the "val" rows
    probs_<i>.npy sub-network i's probabilities on the "val" rows (evaluate)
    out/          the first listed sub-network, sliced (slice)
    info.json     device, seconds, the losses, per sub-network CPU latency per
                  example in ms and the full model's in the same job; after
                  fine-tuning with "rewire", head and unit
                  importance (sorted, most important first)
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pruning  # type: ignore[import-not-found]  # handed in next to this script
import torch
from torch import nn


def device_of(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA was asked for, but this job sees no GPU")
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def batches_of(n: int, size: int, step0: int, steps: int, seed: int):
    """(global step, row indices) for steps step0 .. step0+steps-1: each epoch is a
    permutation drawn from (seed, epoch), so a chunked run sees the batches an
    unbroken one would."""
    per_epoch = max(1, -(-n // size))
    for step in range(step0, step0 + steps):
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        yield step, order[position * size : (position + 1) * size]


def schedule(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup`` of the steps, then linear decay to zero."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def predict(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, device, size: int = 64
) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), size):
            logits = model(
                ids[start : start + size].to(device), mask[start : start + size].to(device)
            )
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns no row of this batch uses."""
    width = max(1, int(mask.sum(1).max()))
    return ids[:, :width], mask[:, :width]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return nn.functional.kl_div(
        torch.log_softmax(student / t, dim=-1),
        torch.softmax(teacher / t, dim=-1),
        reduction="batchmean",
    ) * (t * t)


def train(model, config, data, device, info) -> None:
    tc = config["train"]
    fit = data["fit"]
    ids, mask, labels = fit["input_ids"], fit["attention_mask"], fit["labels"]
    # The embeddings (half of MiniLM's parameters, and not pruned) stay as pretrained:
    # on two cores their gradients and AdamW state cost more than they bring.
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=tc["lr"], weight_decay=0.01)
    if Path("optimizer.pt").is_file():
        optimizer.load_state_dict(
            torch.load("optimizer.pt", weights_only=True, map_location=device)
        )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    supernet = config["phase"] == "supernet"
    distiller = None  # the polish's teacher (the super-network's own: its full network)
    if tc.get("distill") and Path("teacher").is_dir():
        distiller, _ = pruning.load_classifier("teacher")
        distiller.to(device).eval()
    shape = pruning.shape_of(model)
    if supernet:
        small = pruning.smallest(tc["space"], shape)
        full = pruning.SubNet.full(shape)
        rng = random.Random(config["seed"] * 1_000_003 + tc["step0"])
    losses = []
    model.train()
    for step, rows in batches_of(
        len(ids), config["batch_size"], tc["step0"], tc["steps"], config["seed"]
    ):
        factor = schedule(step, tc["total"], tc.get("warmup", 0.1))
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * factor
        index = torch.as_tensor(rows)
        b_ids, b_mask = trim(ids[index], mask[index])
        b_ids, b_mask, b_labels = b_ids.to(device), b_mask.to(device), labels[index].to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(b_ids, b_mask)
        loss = nn.functional.cross_entropy(logits, b_labels)
        if distiller is not None:
            with torch.no_grad():
                taught = distiller(b_ids, b_mask)
            loss = loss + kd_loss(logits, taught, tc["temperature"])
        loss.backward()
        total = float(loss.detach())
        if supernet:
            teacher = logits.detach()
            students = [small] + [
                pruning.sample(tc["space"], shape, rng) for _ in range(tc["random"])
            ]
            for subnet in students:
                if subnet == full:
                    continue
                with pruning.masked(model, subnet):
                    sub_loss = kd_loss(model(b_ids, b_mask), teacher, tc["temperature"])
                sub_loss.backward()
                total += float(sub_loss.detach())
        nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        losses.append(round(total, 5))
    info["losses"] = losses
    torch.save(optimizer.state_dict(), "optimizer.pt")


def cpu_latency_ms(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, repeats: int = 3
) -> float:
    """Milliseconds per example, one example at a time on the CPU (best of repeats)."""
    model = model.to("cpu").eval()
    best = float("inf")
    with torch.no_grad():
        model(*trim(ids[:1], mask[:1]))  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(len(ids)):
                model(*trim(ids[i : i + 1], mask[i : i + 1]))
            best = min(best, (time.perf_counter() - start) / max(1, len(ids)))
    return best * 1000.0


def main() -> None:
    start = time.time()
    config = json.loads(Path("config.json").read_text())
    torch.manual_seed(config["seed"])
    device = device_of(config.get("device", "auto"))
    info: dict = {"device": device_name(device)}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained("model", local_files_only=True)
    frame = pd.read_parquet("data.parquet")
    data = {}
    for part in ("fit", "val"):
        rows = frame[frame["part"] == part]
        enc = encode(tokenizer, rows["text"].astype(str).tolist(), config["max_length"])
        enc["labels"] = torch.as_tensor(rows["label"].to_numpy(), dtype=torch.long)
        data[part] = enc
    if config["phase"] == "finetune" and config.get("pretrained"):
        model = pruning.from_pretrained("model", config["num_labels"])
    else:
        model, _ = pruning.load_classifier("model")
    model.to(device)
    labels = config.get("labels") or list(range(config["num_labels"]))
    val = data["val"]
    if config["phase"] in ("finetune", "supernet"):
        train(model, config, data, device, info)
        if config["train"].get("rewire"):
            fit = data["fit"]
            n = min(
                len(fit["labels"]),
                config["batch_size"] * config["train"].get("importance_batches", 8),
            )
            batches = [
                (
                    *(
                        t.to(device)
                        for t in trim(
                            fit["input_ids"][i : i + 32], fit["attention_mask"][i : i + 32]
                        )
                    ),
                    fit["labels"][i : i + 32].to(device),
                )
                for i in range(0, n, 32)
            ]
            heads, units = pruning.importance(model, batches)
            pruning.rewire(model, heads, units)
            info["head_importance"] = torch.sort(heads, dim=1, descending=True).values.tolist()
        np.save("val_probs.npy", predict(model, val["input_ids"], val["attention_mask"], device))
        pruning.save_classifier(model, "out", labels, "model")
    elif config["phase"] == "slice":
        subnet = pruning.SubNet.from_dict(config["subnets"][0])
        small = pruning.slice_model(model, subnet)
        np.save("val_probs.npy", predict(small, val["input_ids"], val["attention_mask"], device))
        pruning.save_classifier(small, "out", labels, "model")
    else:
        latencies = []
        n_lat = min(len(val["labels"]), config.get("latency_examples", 16))
        full_before = cpu_latency_ms(
            copy.deepcopy(model), val["input_ids"][:n_lat], val["attention_mask"][:n_lat]
        )
        for i, spec in enumerate(config["subnets"]):
            subnet = pruning.SubNet.from_dict(spec)
            small = pruning.slice_model(model, subnet).to(device)
            np.save(
                f"probs_{i}.npy", predict(small, val["input_ids"], val["attention_mask"], device)
            )
            latencies.append(
                cpu_latency_ms(small, val["input_ids"][:n_lat], val["attention_mask"][:n_lat])
            )
            del small
        info["latency_ms"] = latencies
        # the full model timed in the same job, before and after (the faster of the
        # two): latencies are compared as ratios to it, so load on the machine that
        # changes between jobs does not move the front
        reference = copy.deepcopy(model)
        info["full_latency_ms"] = min(
            full_before,
            cpu_latency_ms(reference, val["input_ids"][:n_lat], val["attention_mask"][:n_lat]),
        )
    info["seconds"] = round(time.time() - start, 2)
    Path("info.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
