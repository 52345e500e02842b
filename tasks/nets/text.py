"""Text networks: token ids ``(N, length)`` padded with 0 and their lengths ``(N,)`` in,
class logits out; and the character language models (``forward(idx, targets)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from tasks.errors import ConfigError, did_you_mean
from tasks.nets.mlp import MLP


class _EmbeddingRNN(nn.Module):
    """Token embeddings (id 0 is padding) -> LSTM or GRU -> dropout and a linear head."""

    def __init__(
        self,
        vocab_size: int,
        outputs: int,
        cell: type[nn.LSTM] | type[nn.GRU],
        embedding_dim: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.rnn = cell(
            embedding_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        width = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, outputs))
        recurrent_init(self.rnn)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        with torch.no_grad():
            self.embedding.weight[0].zero_()  # padding


def recurrent_init(rnn: nn.LSTM | nn.GRU) -> None:
    """Keras' initialisation of a recurrent layer, which trains small text models better
    than PyTorch's uniform one: each gate's input weights Glorot-uniform, its recurrent
    weights orthogonal, biases zero, and an LSTM's forget gate bias 1 (it starts by
    remembering: Jozefowicz et al., 2015)."""
    gates = 4 if isinstance(rnn, nn.LSTM) else 3
    for name, weight in rnn.named_parameters():
        blocks = weight.data.chunk(gates, dim=0)
        for k, block in enumerate(blocks):
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(block)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(block)
            else:  # bias_ih, bias_hh: PyTorch adds both; the forget gate (LSTM gate 1) is 1
                block.fill_(1.0 if gates == 4 and k == 1 and name.startswith("bias_ih") else 0.0)


class EmbeddingLSTM(_EmbeddingRNN):
    """The reference: Embedding(16) -> LSTM(32) -> dense, read at each text's last token
    (not at the padding after it)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 16,
        hidden_size: int = 32,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            vocab_size, num_classes, nn.LSTM, embedding_dim, hidden_size, num_layers, dropout
        )

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(ids))
        last = (lengths - 1).clamp(min=0).to(out.device)
        return self.head(out[torch.arange(ids.shape[0], device=out.device), last])


class BiGRU(_EmbeddingRNN):
    """Bidirectional GRU over packed sequences (padding is never read); the final forward
    and backward states, concatenated, feed the classifier."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 64,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            vocab_size, num_classes, nn.GRU, embedding_dim, hidden_size, num_layers, dropout, True
        )

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            return self._padded_forward(ids, lengths)
        packed = pack_padded_sequence(
            self.embedding(ids), lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
        )
        _, h = self.rnn(packed)  # (layers * 2, N, hidden), in the input order
        return self.head(torch.cat([h[-2], h[-1]], dim=1))

    def _directions(self) -> list[tuple[nn.GRU, nn.GRU]]:
        """Each layer's forward and backward weights as two one-way GRUs (not registered:
        they share the tensors of ``self.rnn``, which alone is saved)."""
        rnn, layers = self.rnn, []
        for k in range(rnn.num_layers):
            pair = []
            for suffix in ("", "_reverse"):
                inputs = rnn.input_size if k == 0 else 2 * rnn.hidden_size
                one = nn.GRU(inputs, rnn.hidden_size, 1, batch_first=True)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    setattr(one, f"{name}_l0", getattr(rnn, f"{name}_l{k}{suffix}"))
                pair.append(one)
            layers.append(tuple(pair))
        return layers

    def _padded_forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The packed forward's result without packing (which ONNX cannot hold): the
        backward direction reads each row's tokens reversed in place, so padding comes
        after them in both directions and never reaches a state that is read."""
        x = self.embedding(ids)
        lengths = lengths.clamp(min=1).to(ids.device)
        steps = torch.arange(ids.shape[1], device=ids.device)
        flip = (lengths[:, None] - 1 - steps[None, :]).clamp(min=0)  # (N, T)
        rows = torch.arange(ids.shape[0], device=ids.device)  # not len(): free batch size
        for forward_gru, backward_gru in self._directions():
            ahead, _ = forward_gru(x)
            reversed_in = x.gather(1, flip[..., None].expand(-1, -1, x.shape[2]))
            behind, _ = backward_gru(reversed_in)
            back = behind.gather(1, flip[..., None].expand(-1, -1, behind.shape[2]))
            x = torch.cat([ahead, back], dim=2)
        last = lengths - 1
        return self.head(torch.cat([ahead[rows, last], behind[rows, last]], dim=1))


class TfidfMLP(nn.Module):
    """Bag of words: TF-IDF of the token counts (L2-normalised, as scikit-learn's
    ``TfidfVectorizer``) -> MLP; ``hidden_sizes=[]`` is logistic regression. The ``idf``
    buffer is set from the training split and saved with the weights."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (64,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("idf", torch.ones(vocab_size))
        self.mlp = MLP(vocab_size, num_classes, hidden_sizes, dropout=dropout)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        counts = ids.new_zeros((ids.shape[0], self.vocab_size), dtype=torch.float32)
        counts.scatter_add_(1, ids, (ids > 0).float())  # padding (id 0) counts nothing
        tfidf = nn.functional.normalize(counts * self.idf, dim=1)
        return self.mlp(tfidf)


TEXT_NETWORKS = {"lstm": EmbeddingLSTM, "gru": BiGRU, "bow": TfidfMLP}


def build_text_net(name: str, vocab_size: int, num_classes: int, **options: Any) -> nn.Module:
    """``lstm`` (reference), ``gru`` (bidirectional, packed) or ``bow`` (TF-IDF MLP)."""
    if name not in TEXT_NETWORKS:
        raise ConfigError(
            f"task.network={name!r} is not a text network; choose one of "
            f"{list(TEXT_NETWORKS)}.{did_you_mean(name, TEXT_NETWORKS)}"
        )
    try:
        return TEXT_NETWORKS[name](vocab_size, num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"task.network_options do not fit network {name!r}: {exc}") from exc


# -- character language models --------------------------------------------------------------
class CharLSTM(_EmbeddingRNN):
    """The reference character model: Embedding -> LSTM -> dense over the vocabulary, at
    every position (the reference reads 3 characters; this one reads up to block_size)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        embedding_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            vocab_size, vocab_size, nn.LSTM, embedding_dim, hidden_size, num_layers, dropout
        )

    def forward(self, idx: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(idx))
        return self.head(out)


class CharTransformer(nn.Module):
    """A small causal (GPT-style, pre-norm) Transformer with learnt positions."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        embedding_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        hidden_size: int | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ConfigError(
                f"embedding_dim={embedding_dim} must be divisible by num_heads={num_heads}"
            )
        self.block_size = block_size
        self.tokens = nn.Embedding(vocab_size, embedding_dim)
        self.positions = nn.Embedding(block_size, embedding_dim)
        layer = nn.TransformerEncoderLayer(
            embedding_dim,
            num_heads,
            hidden_size or 4 * embedding_dim,
            dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embedding_dim)
        self.head = nn.Linear(embedding_dim, vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        length = idx.shape[1]
        if length > self.block_size:
            raise ValueError(f"sequence of {length} exceeds block_size={self.block_size}")
        positions = torch.arange(length, device=idx.device)
        x = self.tokens(idx) + self.positions(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=idx.device)
        return self.head(self.norm(self.blocks(x, mask=mask, is_causal=True)))


LM_NETWORKS = {"lstm": CharLSTM, "transformer": CharTransformer}


def build_char_net(name: str, vocab_size: int, block_size: int, **options: Any) -> nn.Module:
    if name not in LM_NETWORKS:
        raise ConfigError(
            f"task.network={name!r} is not a language model; choose one of "
            f"{list(LM_NETWORKS)}.{did_you_mean(name, LM_NETWORKS)}"
        )
    try:
        return LM_NETWORKS[name](vocab_size, block_size, **options)
    except TypeError as exc:
        raise ConfigError(f"task.network_options do not fit network {name!r}: {exc}") from exc
