"""Real-world-shaped models trained in a few seconds (nothing is downloaded), shared by
the compiler's tests (tests/integration/test_compile_realworld.py) and its benchmark
(benchmarks/realworld.py):

- a token-pattern task: sequences of ids drawn from one of ``TOPICS`` topics
  (each topic favours its own slice of the vocabulary), padded to ``SEQ`` with
  id 0 and a mask; the models learn to tell the topics apart;
- a small transformer encoder (2 layers, d_model 64) trained as a topic
  classifier whose normalised pooled embedding is the output;
- an EmbeddingBag-style classifier (mean of token embeddings, then a linear layer);
- a regression MLP on scikit-learn's diabetes data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VOCAB = 256
SEQ = 24
TOPICS = 8
UNKNOWN_ID = 1


def token_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids int64 [rows, SEQ], mask int64 [rows, SEQ], topic int64 [rows])."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, TOPICS, rows)
    lengths = rng.integers(SEQ // 3, SEQ + 1, rows)
    ids = np.zeros((rows, SEQ), dtype=np.int64)
    mask = np.zeros((rows, SEQ), dtype=np.int64)
    width = (VOCAB - 2) // TOPICS
    for i in range(rows):
        n = lengths[i]
        own = 2 + topics[i] * width + rng.integers(0, width, n)
        shared = rng.integers(2, VOCAB, n)
        pick = rng.random(n) < 0.45
        row = np.where(pick, own, shared)
        row[rng.random(n) < 0.03] = UNKNOWN_ID
        ids[i, :n] = row
        mask[i, :n] = 1
    return ids, mask, topics.astype(np.int64)


def build_encoder() -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.norm1 = nn.LayerNorm(d)
            self.norm2 = nn.LayerNorm(d)
            self.ff1 = nn.Linear(d, 4 * d)
            self.ff2 = nn.Linear(4 * d, d)

        def forward(self, x: Any, bias: Any) -> Any:
            b, t, d = x.shape
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            h = self.heads

            def split(z: Any) -> Any:
                return z.reshape(b, t, h, d // h).transpose(1, 2)

            att = (split(q) @ split(k).transpose(-1, -2)) / float((d // h) ** 0.5) + bias
            mixed = (att.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, t, d)
            x = self.norm1(x + self.out(mixed))
            return self.norm2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    class Encoder(nn.Module):
        def __init__(self, d: int = 64, layers: int = 2, heads: int = 4) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, d)
            self.pos = nn.Parameter(torch.zeros(1, SEQ, d))
            self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
            self.head = nn.Linear(d, TOPICS)

        def pooled(self, ids: Any, mask: Any) -> Any:
            m = mask.to(torch.float32)
            # mask arithmetic as exported encoders have it (GreaterOrEqual + Where in ONNX)
            bias = torch.where(mask >= 1, 0.0, -1e4)[:, None, None, :]
            x = self.embed(ids) + self.pos
            for block in self.blocks:
                x = block(x, bias)
            summed = (x * m[:, :, None]).sum(1)
            return summed / m.sum(1, keepdim=True).clamp(min=1.0)

        def forward(self, ids: Any, mask: Any) -> Any:
            return torch.nn.functional.normalize(self.pooled(ids, mask), dim=-1)

    return Encoder()


def build_bag() -> Any:
    import torch
    from torch import nn

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 32, padding_idx=0)
            self.fc = nn.Linear(32, TOPICS)

        def forward(self, ids: Any) -> Any:
            present = (ids != 0).to(torch.float32)
            summed = (self.embed(ids) * present[:, :, None]).sum(1)
            return self.fc(summed / present.sum(1, keepdim=True).clamp(min=1.0))

    return Bag()


def build_regressor() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)
    )


def BatchBaked(inner: Any) -> Any:  # noqa: N802 - a module class, built lazily (torch)
    """``inner`` behind a reshape to the traced batch: ``torch.export`` at batch 1 bakes
    [1, 2, 5] into the graph, which no dynamic-batch re-export can take."""
    from torch import nn

    class Baked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            rows = x.shape[0]
            return self.inner(x.reshape(rows, 2, 5).reshape(rows, 10))

    return Baked()


@dataclass(frozen=True)
class Trained:
    module: Any
    files: dict[str, Path]  # model, calibration, validation, labels
    validation: dict[str, np.ndarray]
    labels: np.ndarray


def _save(directory: Path, name: str, arrays: dict[str, np.ndarray]) -> Path:
    path = directory / f"{name}.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def train_encoder(directory: Path, seconds_budget_steps: int = 150) -> Trained:
    import torch

    torch.manual_seed(0)
    ids, mask, topics = token_data(1024, seed=1)
    model = build_encoder()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t_ids, t_mask, t_y = map(torch.from_numpy, (ids, mask, topics))
    for _ in range(seconds_budget_steps):
        batch = torch.randint(0, len(ids), (64,))
        logits = model.head(model.pooled(t_ids[batch], t_mask[batch]))
        loss = torch.nn.functional.cross_entropy(logits, t_y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    v_ids, v_mask, v_y = token_data(160, seed=2)
    c_ids, c_mask, _ = token_data(128, seed=3)
    torch.save(model.state_dict(), directory / "encoder.pt")
    return Trained(
        module=model,
        files={
            "model": directory / "encoder.pt",
            "calibration": _save(directory, "enc-cal", {"ids": c_ids, "mask": c_mask}),
            "validation": _save(directory, "enc-val", {"ids": v_ids, "mask": v_mask}),
        },
        validation={"ids": v_ids, "mask": v_mask},
        labels=v_y,
    )


def train_bag(directory: Path) -> Trained:
    import torch

    torch.manual_seed(0)
    ids, _, topics = token_data(2048, seed=4)
    model = build_bag()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    t_ids, t_y = torch.from_numpy(ids), torch.from_numpy(topics)
    for _ in range(200):
        batch = torch.randint(0, len(ids), (128,))
        loss = torch.nn.functional.cross_entropy(model(t_ids[batch]), t_y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    v_ids, _, v_y = token_data(300, seed=5)
    c_ids, _, _ = token_data(128, seed=6)
    torch.save(model.state_dict(), directory / "bag.pt")
    return Trained(
        module=model,
        files={
            "model": directory / "bag.pt",
            "calibration": _save(directory, "bag-cal", {"ids": c_ids}),
            "validation": _save(directory, "bag-val", {"ids": v_ids}),
            "labels": _save(directory, "bag-labels", {"labels": v_y}),
        },
        validation={"ids": v_ids},
        labels=v_y,
    )


def train_regressor(directory: Path) -> Trained:
    import torch
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    model = build_regressor()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)[:, None]
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.save(model.state_dict(), directory / "regressor.pt")
    return Trained(
        module=model,
        files={
            "model": directory / "regressor.pt",
            "calibration": _save(directory, "reg-cal", {"input": x_train}),
            "validation": _save(directory, "reg-val", {"input": x_val}),
            "labels": _save(directory, "reg-labels", {"labels": y_val[:, None]}),
        },
        validation={"input": x_val},
        labels=y_val,
    )
