"""The LMDM denoiser: an EDGE-style FiLM transformer that predicts clean motion x̂₀ from noisy motion x_t.

Weight compatibility drives the layout: parameter names and shapes are those of ``lmdm_v0.4_hubert.pth``
(``model_state_dict``), so the released file loads with ``strict=True`` (ditto_spec.md §1.6, §2.6.3).

Numerics that matter for equivalence with the original (public ``core/models/modules/lmdm_modules/*.py``):

* Rotary position embedding rotates the full 512-d hidden state *before* the Q/K projections (not per head);
  values are never rotated. Pairs (2k, 2k+1) share frequency f_k and rotate as (a, b) → (−b, a).
* One rotary module is shared by the model and every layer, so a checkpoint stores its ``freqs`` buffer once per
  owner (``rotary.freqs``, ``cond_encoder.{i}.rotary.freqs``, ``seqTransDecoder.stack.{i}.rotary.freqs``). A load
  copies each entry into the same tensor, so the copy visited last — the last decoder layer's — is the one in use,
  exactly as in the original (whose forward reads the buffer). The released copies are all identical.
* Classifier-free guidance replaces the condition *after* the encoder: the unconditional pass uses the learned
  ``null_cond_embed`` tokens and ``null_cond_hidden`` vector, so its encoder output is never needed.
* Memory for cross-attention = LayerNorm(condition tokens ++ 2 time tokens); FiLM applies (1 + scale)·y + shift.

There is no dropout: this module only serves inference, where the original's dropout layers are inactive.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FiLM",
    "FiLMDecoderLayer",
    "MotionDecoder",
    "PackedAttention",
    "RotaryEmbedding",
    "SinusoidalTimeEmbedding",
    "TransformerEncoderLayer",
    "apply_rotary",
]

#: Which guidance passes :meth:`MotionDecoder.forward` runs. ``"both"`` stacks conditional rows over
#: unconditional rows along the batch axis (see the method).
Passes = Literal["cond", "uncond", "both"]

RopeTables = tuple[Tensor, Tensor]


class RotaryEmbedding(nn.Module):
    """Rotary position angles p·f_k with f_k = θ^(−2k/dim); holds ``freqs`` as a persistent buffer.

    The buffer is persistent (rather than recomputed) because the checkpoints carry it and the original's
    forward reads the loaded values; recomputing would silently ignore what a checkpoint says.
    """

    freqs: Tensor

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        # float32 throughout, like the original, so default buffers equal the released ones bit for bit
        exponents = torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim
        self.register_buffer("freqs", 1.0 / torch.pow(theta, exponents))

    def tables(self, length: int) -> RopeTables:
        """cos and sin of the angles for positions 0..length−1, each frequency repeated for its pair: (length, dim)."""
        positions = torch.arange(length, device=self.freqs.device, dtype=self.freqs.dtype)
        # repeating the frequencies (static size) rather than the angles keeps the exported graph shape-static
        angles = positions[:, None] * self.freqs.repeat_interleave(2)[None, :]
        return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, rope: RopeTables) -> Tensor:
    """Rotate feature pairs (2k, 2k+1) of ``x`` (…, L, dim) by their angles; ``rope`` must cover L positions."""
    cos, sin = rope
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class SinusoidalTimeEmbedding(nn.Module):
    """Diffusion step t → [sin(t·f), cos(t·f)] with f_k = exp(−k·ln(10000)/(half−1)); parameter-free.

    Written with the same float32 operations as the original so the embedding is bit-identical.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -scale)
        angles = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class PackedAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (packed Q/K/V rows).

    Attention is computed explicitly (matmul + softmax) rather than through ``nn.MultiheadAttention`` because
    query and key arrive already rotated and different from the value, and because plain ops export cleanly to
    ONNX and TensorRT.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"latent dim {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5  # a Python constant, so exported graphs do not recompute it
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """Batch-first (B, L, dim) tensors; returns (B, L_query, dim)."""
        d = self.dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if key is query:  # self-attention: the shared (rotated) input needs one projection for Q and K
            q, k = F.linear(query, w[: 2 * d], b[: 2 * d]).chunk(2, dim=-1)
        else:
            q = F.linear(query, w[:d], b[:d])
            k = F.linear(key, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(value, w[2 * d :], b[2 * d :])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        out = scores.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).flatten(-2))


class FiLM(nn.Module):
    """Scale and shift (each (B, 1, dim)) generated from the time/condition vector."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, 2 * dim))

    def forward(self, t_vec: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift = self.block(t_vec)[:, None, :].chunk(2, dim=-1)
        return scale, shift


def _modulate(y: Tensor, film: tuple[Tensor, Tensor]) -> Tensor:
    scale, shift = film
    return (scale + 1) * y + shift


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer of the condition encoder (rotary self-attention, GELU feed-forward)."""

    def __init__(self, dim: int, num_heads: int, ff_size: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        # registered only so checkpoints find their per-layer copy of the shared buffer; angles come from the caller
        self.rotary = rotary

    def forward(self, x: Tensor, rope: RopeTables) -> Tensor:
        h = self.norm1(x)
        qk = apply_rotary(h, rope)
        x = x + self.self_attn(qk, qk, h)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class FiLMDecoderLayer(nn.Module):
    """Pre-norm decoder layer: rotary self-attention, rotary cross-attention, feed-forward — each FiLM-modulated."""

    def __init__(self, dim: int, num_heads: int, ff_size: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.multihead_attn = PackedAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.film1 = FiLM(dim)
        self.film2 = FiLM(dim)
        self.film3 = FiLM(dim)
        self.rotary = rotary  # see TransformerEncoderLayer

    def forward(self, x: Tensor, memory: Tensor, t_vec: Tensor, rope_x: RopeTables, rope_mem: RopeTables) -> Tensor:
        h = self.norm1(x)
        qk = apply_rotary(h, rope_x)
        x = x + _modulate(self.self_attn(qk, qk, h), self.film1(t_vec))
        h = self.norm2(x)
        x = x + _modulate(
            self.multihead_attn(apply_rotary(h, rope_x), apply_rotary(memory, rope_mem), memory), self.film2(t_vec)
        )
        h = self.linear2(F.gelu(self.linear1(self.norm3(x))))
        return x + _modulate(h, self.film3(t_vec))


class DecoderLayerStack(nn.Module):
    """Container whose only job is the ``seqTransDecoder.stack.{i}`` key prefix of the checkpoints."""

    def __init__(self, layers: list[FiLMDecoderLayer]) -> None:
        super().__init__()
        self.stack = nn.ModuleList(layers)

    def forward(self, x: Tensor, memory: Tensor, t_vec: Tensor, rope_x: RopeTables, rope_mem: RopeTables) -> Tensor:
        for layer in self.stack:
            x = layer(x, memory, t_vec, rope_x, rope_mem)
        return x


class MotionDecoder(nn.Module):
    """x̂₀ = f(x_t, first-frame motion, per-frame condition, t); defaults are the released hyper-parameters.

    Shapes (defaults): x (B, 80, 265), cond_frame (B, 265), cond (B, 80, 1103), time_cond (B,) int64.
    """

    def __init__(
        self,
        *,
        motion_dim: int = 265,
        cond_dim: int = 1103,
        seq_len: int = 80,
        latent_dim: int = 512,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_encoder_layers: int = 2,
        num_heads: int = 8,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        d = latent_dim
        self.latent_dim = d
        # Registration order matters for one thing: a state-dict load visits the shared rotary module under each
        # of its names in this order, and the last copy (the last decoder layer's) wins, as in the original.
        self.rotary = RotaryEmbedding(d, rope_theta)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(d), nn.Linear(d, 4 * d), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(4 * d, d))
        self.to_time_tokens = nn.Sequential(nn.Linear(4 * d, 2 * d))
        self.null_cond_embed = nn.Parameter(torch.randn(1, seq_len, d))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, d))
        self.norm_cond = nn.LayerNorm(d)
        self.input_projection = nn.Linear(2 * motion_dim, d)
        self.cond_encoder = nn.ModuleList(
            TransformerEncoderLayer(d, num_heads, ff_size, self.rotary) for _ in range(num_encoder_layers)
        )
        self.cond_projection = nn.Linear(cond_dim, d)
        self.non_attn_cond_projection = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.seqTransDecoder = DecoderLayerStack(
            [FiLMDecoderLayer(d, num_heads, ff_size, self.rotary) for _ in range(num_layers)]
        )
        self.final_layer = nn.Linear(d, motion_dim)

    def encode_condition(self, cond: Tensor, rope: RopeTables) -> tuple[Tensor, Tensor]:
        """Condition tokens (B, L, D) for cross-attention and the pooled vector (B, D) added to the FiLM input."""
        tokens = self.cond_projection(cond)
        for layer in self.cond_encoder:
            tokens = layer(tokens, rope)
        return tokens, self.non_attn_cond_projection(tokens.mean(dim=-2))

    def forward(
        self,
        x: Tensor,
        cond_frame: Tensor,
        cond: Tensor | None,
        time_cond: Tensor,
        *,
        passes: Passes = "cond",
    ) -> Tensor:
        """Predicted x̂₀ for the conditional pass, the unconditional ("null embedding") pass, or both.

        ``passes="both"`` is what guidance needs: the inputs are shared, so x is projected and t embedded once,
        the condition encoder runs only for the conditional half (the unconditional half's encoder output would be
        discarded), and the decoder runs once on a doubled batch. The result is (2B, L, motion): rows [0:B] are
        conditional, rows [B:2B] unconditional — the same values as two separate calls. ``cond`` may be ``None``
        for ``passes="uncond"``.
        """
        batch, length = x.shape[0], x.shape[1]
        frame = cond_frame[:, None, :].expand(-1, length, -1)
        h = self.input_projection(torch.cat((x, frame), dim=-1))
        t_hidden = self.time_mlp(time_cond)

        mem_len = (self.null_cond_embed.shape[1] if cond is None else cond.shape[1]) + 2
        rope_mem = self.rotary.tables(max(mem_len, length))
        rope_x = (rope_mem[0][:length], rope_mem[1][:length])

        tokens: list[Tensor] = []
        hidden: list[Tensor] = []
        if passes in ("cond", "both"):
            if cond is None:
                raise ValueError(f"passes={passes!r} needs a condition tensor")
            cond_len = cond.shape[1]
            tok, hid = self.encode_condition(cond, (rope_mem[0][:cond_len], rope_mem[1][:cond_len]))
            tokens.append(tok)
            hidden.append(hid)
        if passes in ("uncond", "both"):
            tokens.append(self.null_cond_embed.expand(batch, -1, -1))
            hidden.append(self.null_cond_hidden.expand(batch, -1))
        if not tokens:
            raise ValueError(f"unknown passes={passes!r}")
        copies = len(tokens)
        if copies > 1:
            h = torch.cat([h] * copies)
            t_hidden = torch.cat([t_hidden] * copies)
        cond_tokens = torch.cat(tokens) if copies > 1 else tokens[0]
        cond_hidden = torch.cat(hidden) if copies > 1 else hidden[0]

        t_vec = self.to_time_cond(t_hidden) + cond_hidden
        time_tokens = self.to_time_tokens(t_hidden).unflatten(-1, (2, -1))
        memory = self.norm_cond(torch.cat((cond_tokens, time_tokens), dim=-2))
        rope_mem = (rope_mem[0][: memory.shape[1]], rope_mem[1][: memory.shape[1]])
        out = self.seqTransDecoder(h, memory, t_vec, rope_x, rope_mem)
        return self.final_layer(out)
