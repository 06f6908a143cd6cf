"""Hugging Face architectures exported by ``torch.onnx`` (dynamo, dynamic batch and sequence) are imported,
run by the emitted PyTorch and re-exported, matching onnxruntime on the original at another batch and length.
This path found the symbolic-shape bugs of BERT (a position buffer sliced to ``seq``, ``batch x seq x seq`` masks,
GatherND) and GPT-Neo (``min(64, seq)`` in a reshape target); tiny random configs keep it fast. BERT also goes
through INT8 export end to end."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import assert_matches_ort, run_ort

T = pytest.importorskip("transformers")


def _configs() -> dict:
    return {
        "distilbert": (lambda: T.DistilBertModel(T.DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2,
                                                                    hidden_dim=64)), "text"),
        "gpt_neo": (lambda: T.GPTNeoModel(T.GPTNeoConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                                                         attention_types=[[["global", "local"], 1]], window_size=4,
                                                         max_position_embeddings=64)), "text"),
        "llama": (lambda: T.LlamaModel(T.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                                     max_position_embeddings=64)), "text"),
        "phi": (lambda: T.PhiModel(T.PhiConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=4,
                                               max_position_embeddings=64)), "text"),
        "mobilevit": (lambda: T.MobileViTModel(T.MobileViTConfig(image_size=32, hidden_sizes=[16, 24, 32],
                                                                 neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                                                                 num_attention_heads=2)), "image"),
        "segformer": (lambda: T.SegformerModel(T.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                                                 hidden_sizes=[8, 16], num_attention_heads=[1, 2],
                                                                 decoder_hidden_size=16)), "image"),
        "convnext": (lambda: T.ConvNextModel(T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1])),
                     "image"),
        "wav2vec2": (lambda: T.Wav2Vec2Model(T.Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
            conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)),
            "audio"),
    }


@pytest.mark.parametrize("name", sorted(_configs()))
def test_hugging_face_model_from_torch_onnx_matches_onnxruntime(name: str, tmp_path: Path):
    build, kind = _configs()[name]
    torch.manual_seed(0)
    net = build().eval()

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.m(input_ids=x) if kind == "text" else self.m(x)).last_hidden_state

    rng = np.random.default_rng(0)
    if kind == "text":
        x, dyn, feed = torch.randint(0, 100, (2, 12)), ({0: "batch", 1: "seq"},), rng.integers(0, 100, (3, 9))
    elif kind == "image":
        x, dyn = torch.randn(2, 3, 32, 32), ({0: "batch"},)
        feed = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    else:
        x, dyn = torch.randn(2, 400), ({0: "batch", 1: "t"},)
        feed = rng.standard_normal((3, 480)).astype(np.float32)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(), (x,), str(path), input_names=["x"], dynamo=True, dynamic_shapes=dyn,
                          verbose=False)
    assert_matches_ort(onnx.load(str(path)), {"x": feed}, rtol=1e-4, atol=1e-4)


def test_hugging_face_bert_exported_by_torch_onnx_loads_runs_and_quantizes(tmp_path: Path):
    """The whole path that failed: torch.onnx (dynamo) BERT with dynamic batch and sequence -> inspect (symbolic
    slice, GatherND, [batch,1,seq,seq] masks) -> emitted PyTorch vs onnxruntime -> INT8 export."""
    transformers = pytest.importorskip("transformers")
    import torch

    from graphopt.export import export_model

    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    net = transformers.BertForSequenceClassification(cfg).eval()
    ids, mask = torch.randint(0, 100, (2, 12)), torch.ones(2, 12, dtype=torch.long)
    path = tmp_path / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (ids, mask), str(path), input_names=["input_ids", "attention_mask"], dynamo=True,
                          dynamic_shapes=({0: "batch", 1: "seq"}, {0: "batch", 1: "seq"}), verbose=False)
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    feed_mask = np.ones((3, 9), np.int64)
    feed_mask[1, 5:] = 0
    feeds = {"input_ids": rng.integers(0, 100, (3, 9)), "attention_mask": feed_mask}
    g = assert_matches_ort(model, feeds, rtol=1e-4, atol=1e-5)
    assert g.outputs[0].type.shape == ("batch", 2)
    with torch.no_grad():
        want = net(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feed_mask)).logits.numpy()
    np.testing.assert_allclose(run_ort(model, feeds)[0], want, rtol=1e-4, atol=1e-5)
    # INT8: the finfo.min mask stays float (entropy calibration used to fail on it), the rest is quantized;
    # the mask arithmetic (Cast/And/GatherND/IsNaN) is no NPU op, so it is written with --allow-violations
    out, calib = tmp_path / "bert_int8.onnx", tmp_path / "calib.npz"
    lengths = rng.integers(4, 13, 16)  # padded sentences: the mask's zeros reach the finfo.min branch
    np.savez(calib, input_ids=rng.integers(0, 100, (16, 12)),
             attention_mask=(np.arange(12)[None, :] < lengths[:, None]).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = export_model(path, out, target="generic-npu-int8", calib=str(calib), input_shapes={
                           "input_ids": [1, 12], "attention_mask": [1, 12]}, allow_violations=True,
                           calib_samples=16, eval_samples=16, latency_runs=0, min_agreement=0.75)
    assert out.exists() and rep.quantization["top1_agreement"] >= 0.75  # a tiny random-init BERT: gate at 0.75
    assert rep.quantization["calibration_method"].startswith("minmax")
    q = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 10
