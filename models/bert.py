"""BERT-tiny encoder (Devlin et al. 2019; Turc et al. 2019 "tiny" = 2 layers, hidden 128, 2 heads, 512 FFN).

Embeddings: token + learned position (+ token-type, id 0 unless given), LayerNorm. Post-LN encoder
layers (x = LN(x + attn(x)); x = LN(x + mlp(x))) with exact (erf) GELU. Attention uses explicit matmul +
softmax so it lowers to primitives; ``model.blocks`` is a ``ModuleList`` whose items have ``.attn`` and
``.mlp`` (same contract as the ViT). The forward returns
``(hidden_states (B, L, H), logits (B, num_labels))``, logits from the tanh pooler over the first token.
Vocabulary defaults to 1000 (synthetic tokens; no tokenizer needed).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Bert", "BertLayer", "BertMlp", "BertSelfAttention", "bert_tiny"]


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and an optional additive padding mask."""

    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % num_heads != 0:
            raise ValueError(f"BertSelfAttention: hidden={hidden} not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim**-0.5)
        if additive_mask is not None:
            scores = scores + additive_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, c)
        return self.out(ctx)


class BertMlp(nn.Module):
    """Intermediate Linear -> GELU -> output Linear."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class BertLayer(nn.Module):
    """Post-LN transformer encoder layer."""

    def __init__(self, hidden: int, num_heads: int, intermediate: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = BertSelfAttention(hidden, num_heads, dropout)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.mlp = BertMlp(hidden, intermediate)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, additive_mask)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class Bert(nn.Module):
    """BERT encoder with a pooled classification head; input int64 token ids (B, L)."""

    def __init__(
        self,
        vocab_size: int = 1000,
        hidden: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate: int = 512,
        max_position: int = 512,
        type_vocab_size: int = 2,
        num_labels: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_position = max_position
        self.vocab_size = vocab_size
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_position, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.register_buffer("position_ids", torch.arange(max_position).unsqueeze(0), persistent=False)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            BertLayer(hidden, num_heads, intermediate, dropout) for _ in range(num_layers)
        )
        self.pooler = nn.Linear(hidden, hidden)
        self.cls_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (per-token hidden states, classification logits).

        ``attention_mask`` (B, L) holds 1 for real tokens and 0 for padding (keys masked with -1e4).
        """
        seq_len = input_ids.shape[1]
        if seq_len > self.max_position:
            raise ValueError(f"Bert: sequence length {seq_len} exceeds max_position={self.max_position}")
        x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :seq_len])
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.emb_dropout(self.emb_norm(x))
        additive = None
        if attention_mask is not None:
            additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.blocks:
            x = layer(x, additive)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, self.classifier(self.cls_dropout(pooled))


def bert_tiny(
    vocab_size: int = 1000,
    hidden: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate: int = 512,
    max_position: int = 512,
    num_labels: int = 2,
    dropout: float = 0.0,
) -> Bert:
    """BERT-tiny encoder (about 0.6M parameters with vocab 1000)."""
    return Bert(vocab_size, hidden, num_layers, num_heads, intermediate, max_position, 2, num_labels, dropout)
