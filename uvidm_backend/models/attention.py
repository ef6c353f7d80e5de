"""Spatial transformer of the latent-diffusion UNet (official ``ldm/modules/attention.py``).

Module names follow the official classes so that the state_dict keys of a ``SpatialTransformer``
are ``norm``, ``proj_in``, ``transformer_blocks.<i>.{attn1,attn2,ff,norm1,norm2,norm3}``, ``proj_out``.
Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (same maths as the
official einsum/softmax path: scale ``dim_head**-0.5``, softmax over the keys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Multi-head (cross-)attention: official ``CrossAttention`` (q/k/v without bias)."""

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x: (B, N, query_dim); context: (B, M, context_dim), or None for self-attention."""
        context = x if context is None else context
        return self.attend(self.to_q(x), self.to_k(context), self.to_v(context))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of projected queries (B, N, H*D) over projected keys and values (B, M, H*D), then ``to_out``."""
        b, n, _ = q.shape
        m = k.shape[1]
        # (B, L, H*D) -> (B, H, L, D); SDPA's default scale is D**-0.5 as in the official code.
        q = q.view(b, n, self.heads, self.dim_head).transpose(1, 2)
        k = k.view(b, m, self.heads, self.dim_head).transpose(1, 2)
        v = v.view(b, m, self.heads, self.dim_head).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class GEGLU(nn.Module):
    """Gated GELU projection (official ``GEGLU``): exact erf GELU on the second half."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """Official ``FeedForward(dim, glu=True, mult=4)``: keys ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner_dim), nn.Dropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Official ``BasicTransformerBlock``: pre-norm self-attention, cross-attention, GEGLU MLP."""

    def __init__(self, dim: int, n_heads: int, d_head: int, dropout: float = 0.0, context_dim: int | None = None):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Official ``SpatialTransformer`` (1x1-conv projections, GroupNorm(32, eps=1e-6)).

    Image features (B, C, H, W) become H*W tokens in row-major order, go through ``depth``
    transformer blocks attending to ``context`` and come back as a residual.
    """

    def __init__(
        self,
        in_channels: int,
        n_heads: int,
        d_head: int,
        depth: int = 1,
        dropout: float = 0.0,
        context_dim: int | None = None,
    ):
        super().__init__()
        inner_dim = n_heads * d_head
        # eps 1e-6 here, unlike the 1e-5 of the UNet's own GroupNorm32 (reference trap 18).
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout, context_dim=context_dim)
            for _ in range(depth)
        )
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.run_tokens(x, lambda block, tokens: block(tokens, context))

    def run_tokens(self, x: Tensor, block_call: Callable[[BasicTransformerBlock, Tensor], Tensor]) -> Tensor:
        """``forward`` with each transformer block run as ``block_call(block, tokens)``."""
        b, _, h, w = x.shape
        h_ = self.proj_in(self.norm(x))
        c = h_.shape[1]
        tokens = h_.flatten(2).transpose(1, 2)  # (B, H*W, C)
        for block in self.transformer_blocks:
            tokens = block_call(block, tokens)
        h_ = tokens.transpose(1, 2).reshape(b, c, h, w)
        return self.proj_out(h_) + x
