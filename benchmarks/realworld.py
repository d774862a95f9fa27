"""Issue #8's benchmark models: a BERT-sized sentence encoder and a diabetes regressor.

- ``encoder``: a sentence-embedding transformer the size of the 6-layer
  BERT-family models (MiniLM-L6: vocabulary 30,522, 6 layers, hidden 384,
  12 heads, feed-forward 1,536, 64 tokens; ~22.7 M parameters), token ids and
  mask in, mean-pooled L2-normalised 384-d embedding out. No weights can be
  downloaded here, so it is randomly initialised and then trained briefly
  (``ENCODER_STEPS`` steps) as a topic classifier on generated token
  sequences; its embeddings are those of a lightly trained model, not of a
  pretrained one, and the issue's held-back pretrained model is not in this
  repository.
- ``diabetes``: the MLP regressor of the tests on scikit-learn's diabetes data.

Each is compiled in a child process (so its wall time and peak memory are the
compile's alone), then every candidate and the plain ``quantize_dynamic`` floor
(onnxruntime's default: per-tensor int8 weights) are scored and timed in this
process, in turns.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

VOCAB, SEQ, HIDDEN, LAYERS, HEADS, TOPICS = 30522, 64, 384, 6, 12, 16
ENCODER_STEPS = 12
VALIDATION_ROWS = 256


def token_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, mask, topic): each sequence mixes its topic's slice of the vocabulary with
    common ids; lengths 12..64, padded with 0; [CLS]=101 first, [SEP]=102 last."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, TOPICS, rows)
    lengths = rng.integers(12, SEQ + 1, rows)
    ids = np.zeros((rows, SEQ), dtype=np.int64)
    mask = np.zeros((rows, SEQ), dtype=np.int64)
    width = (VOCAB - 1000) // TOPICS
    for i in range(rows):
        n = lengths[i]
        own = 1000 + topics[i] * width + rng.integers(0, width, n)
        common = rng.integers(1000, 3000, n)  # frequent words shared by every topic
        row = np.where(rng.random(n) < 0.5, own, common)
        row[0], row[n - 1] = 101, 102
        row[1 : n - 1][rng.random(n - 2) < 0.02] = 100  # [UNK]
        ids[i, :n] = row
        mask[i, :n] = 1
    return ids, mask, topics.astype(np.int64)


def encoder() -> Any:
    """The BERT-sized encoder (post-LayerNorm blocks, GELU feed-forward, mean pooling)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(HIDDEN, HIDDEN)
            self.k = nn.Linear(HIDDEN, HIDDEN)
            self.v = nn.Linear(HIDDEN, HIDDEN)
            self.o = nn.Linear(HIDDEN, HIDDEN)
            self.ln1 = nn.LayerNorm(HIDDEN)
            self.ff1 = nn.Linear(HIDDEN, 4 * HIDDEN)
            self.ff2 = nn.Linear(4 * HIDDEN, HIDDEN)
            self.ln2 = nn.LayerNorm(HIDDEN)

        def forward(self, x: Any, bias: Any) -> Any:
            b, t, _ = x.shape
            d = HIDDEN // HEADS

            def heads(z: Any) -> Any:
                return z.reshape(b, t, HEADS, d).transpose(1, 2)

            scores = heads(self.q(x)) @ heads(self.k(x)).transpose(-1, -2) / d**0.5 + bias
            mixed = (scores.softmax(-1) @ heads(self.v(x))).transpose(1, 2).reshape(b, t, HIDDEN)
            x = self.ln1(x + self.o(mixed))
            return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, HIDDEN)
            self.positions = nn.Embedding(SEQ, HIDDEN)
            self.ln = nn.LayerNorm(HIDDEN)
            self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
            self.head = nn.Linear(HIDDEN, TOPICS)  # training only

        def pooled(self, ids: Any, mask: Any) -> Any:
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            x = self.ln(self.tokens(ids) + self.positions(positions))
            bias = torch.where(mask >= 1, 0.0, -1e4)[:, None, None, :]
            for block in self.blocks:
                x = block(x, bias)
            m = mask.to(torch.float32)[:, :, None]
            return (x * m).sum(1) / m.sum(1).clamp(min=1.0)

        def forward(self, ids: Any, mask: Any) -> Any:
            return nn.functional.normalize(self.pooled(ids, mask), dim=-1)

    return Encoder()


def regressor() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)
    )


@dataclass(frozen=True)
class RealWorkload:
    name: str
    description: str
    task: str
    factory: str
    weights: Path
    calibration: Path
    validation: Path
    params: int
    labels: Path | None = None


def prepare_encoder(directory: Path) -> RealWorkload:
    import torch

    torch.manual_seed(0)
    model = encoder()
    ids, mask, topics = token_data(2048, seed=11)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    started = time.perf_counter()
    for _ in range(ENCODER_STEPS):
        pick = torch.randint(0, len(ids), (16,))
        logits = model.head(model.pooled(torch.from_numpy(ids[pick]), torch.from_numpy(mask[pick])))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(topics[pick]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    logger.info("encoder: %d steps in %.0f s", ENCODER_STEPS, time.perf_counter() - started)
    model.eval()
    weights = directory / "encoder.pt"
    torch.save(model.state_dict(), weights)
    c_ids, c_mask, _ = token_data(64, seed=12)
    v_ids, v_mask, _ = token_data(VALIDATION_ROWS, seed=13)
    np.savez(directory / "enc-cal.npz", input_ids=c_ids, attention_mask=c_mask)
    np.savez(directory / "enc-val.npz", input_ids=v_ids, attention_mask=v_mask)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head"))
    return RealWorkload(
        name="encoder-22m",
        description=(
            f"BERT-sized sentence encoder ({LAYERS} layers, hidden {HIDDEN}, {SEQ} tokens), "
            f"random init + {ENCODER_STEPS} training steps"
        ),
        task="embedding",
        factory="benchmarks.realworld:encoder",
        weights=weights,
        calibration=directory / "enc-cal.npz",
        validation=directory / "enc-val.npz",
        params=int(params),
    )


def prepare_regressor(directory: Path) -> RealWorkload:
    import torch
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    model = regressor()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)[:, None]
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = directory / "diabetes.pt"
    torch.save(model.state_dict(), weights)
    np.savez(directory / "reg-cal.npz", input=x_train)
    np.savez(directory / "reg-val.npz", input=x_val)
    np.savez(directory / "reg-labels.npz", labels=y_val[:, None])
    return RealWorkload(
        name="diabetes-mlp",
        description="MLP 10-64-32-1 on scikit-learn's diabetes (309 train / 133 held out)",
        task="regression",
        factory="benchmarks.realworld:regressor",
        weights=weights,
        calibration=directory / "reg-cal.npz",
        validation=directory / "reg-val.npz",
        labels=directory / "reg-labels.npz",
        params=int(sum(p.numel() for p in model.parameters())),
    )


# ---------------------------------------------------------------- the compile, in a child


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux keeps
    ru_maxrss across exec, so a spawned child would report its parent's size at fork."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compile_child(args: tuple[RealWorkload, Any, Path, Path, Path]) -> None:
    workload, profile, key, out, result = args
    from control_plane.compiler.pipeline import Compiler, CompileRequest

    request = CompileRequest(
        model=workload.weights,
        calibration=workload.calibration,
        validation=workload.validation,
        labels=workload.labels,
        profiles=[profile],
        out_dir=out,
        signing_key=key,
        model_name=workload.name,
        model_version="1",
        factory=workload.factory,
        task=workload.task,  # type: ignore[arg-type]
    )
    steps: list[str] = []

    def progress(message: str) -> None:
        steps.append(f"{time.perf_counter() - started:6.1f} s {message}")
        logger.info("  %s", message)

    compiler = Compiler(request, progress=progress)
    started = time.perf_counter()
    payload: dict[str, Any] = {"steps": steps}
    try:
        outcome = compiler.run()[0]
        payload["compile_seconds"] = time.perf_counter() - started
        payload["outcome"] = {
            "chosen": outcome.chosen.key if outcome.chosen else None,
            "decision": outcome.decision,
            "rows": outcome.rows,
            "package_bytes": outcome.package_bytes,
        }
    except Exception as exc:  # the record says why
        payload["compile_seconds"] = time.perf_counter() - started
        payload["error"] = str(exc)
    payload["peak_rss_mb"] = _peak_rss_mb()
    payload["candidates"] = {
        k: (c.format, c.model_bytes, c.signature, c.outputs)
        for k, c in compiler.candidates.items()
        if not c.error and c.signature is not None and c.model_bytes
    }
    for c in compiler._mixed_cache.values():
        if not c.error and c.signature is not None and c.model_bytes:
            payload["candidates"][c.key] = (c.format, c.model_bytes, c.signature, c.outputs)
    payload["reference"] = compiler.ref_validation
    payload["validation"] = compiler.validation
    payload["onnx_fp32"] = compiler.source.onnx_bytes
    payload["onnx_signature"] = compiler.onnx_signature
    result.write_bytes(pickle.dumps(payload))


def compile_in_child(workload: RealWorkload, profile: Any, key: Path, out: Path) -> dict[str, Any]:
    """Compile in a fresh process; its payload (outcome, candidates, peak RSS)."""
    result = out / f"{workload.name}-{profile.id}.pickle"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_compile_child, args=((workload, profile, key, out, result),))
    child.start()
    child.join()
    if child.exitcode != 0 or not result.exists():
        return {"error": f"compile process exited with {child.exitcode}", "candidates": {}}
    payload: dict[str, Any] = pickle.loads(result.read_bytes())
    result.unlink()
    return payload
