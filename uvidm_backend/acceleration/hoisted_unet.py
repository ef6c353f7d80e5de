"""The UNet's forward with the work that does not change between sampling steps taken out of the step.

During one generation the context (the condition fuser's tokens) is the same at every step, so the
keys and values of the 21 cross-attentions are a function of the generation, not of the step; the 35
ResBlock time projections depend on the timestep alone. `HoistedUNet` therefore

* computes every cross-attention's keys and values in one GEMM per generation (`context_kv`),
* computes the 35 time projections of a step in one GEMM (their weights concatenated), or, with
  `timestep_table=T`, looks them up in a table computed once for the trained timesteps 0 .. T-1
  (the time MLP and that GEMM, about 57 MB of bf16 weights read per step, leave the step),
* projects self-attention queries, keys and values in one GEMM per block (weights concatenated),

and runs everything else through `UNetModel.run_blocks`, the skeleton `UNetModel.forward` runs too. At batch 1
a step is bound by kernel count, not arithmetic: this removes about 110 small GEMMs from every step.
The result is the same function; only GEMM summation order may differ.

The concatenated weights are a snapshot of the UNet's weights at construction (the fast path's UNet
is a frozen copy anyway).

With `flash_small_attention`, attentions of few queries run without the cuDNN backend (so on the flash
kernel where it applies), which PyTorch prefers for all of them on Hopper: timed alone on an H200, the
flash kernel took 9.9 against 16.9 µs for 16 queries over the 1,024 context tokens, 11.4 against 13.2 µs
for 64, and 4.2 against 6.6 µs for a 16-token self-attention (docs/PERFORMANCE.md). In a whole step it took
67 µs off the graphed UNet; `FastUNet` turns it on. The time-projection table took another 27 µs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from uvidm_backend.models.attention import BasicTransformerBlock, SpatialTransformer
from uvidm_backend.models.unet import ResBlock, UNetModel, batch_timesteps


def _layers_in_forward_order(unet: UNetModel) -> list[nn.Module]:
    return [layer for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks] for layer in block]


class HoistedUNet(nn.Module):
    """`forward(x, timesteps, kv)` = `unet(x, timesteps, context)` where `kv = context_kv(context)`."""

    def __init__(self, unet: UNetModel, flash_small_attention: bool = False, timestep_table: int = 0):
        super().__init__()
        self.unet = unet
        self.flash_small_attention = flash_small_attention
        layers = _layers_in_forward_order(unet)
        self.resblocks = [layer for layer in layers if isinstance(layer, ResBlock)]
        self.transformer_blocks = [block for layer in layers if isinstance(layer, SpatialTransformer)
                                   for block in layer.transformer_blocks]
        projections = [block.emb_layers[1] for block in self.resblocks]
        self.register_buffer("emb_weight", torch.cat([p.weight for p in projections]).detach().clone())
        self.register_buffer("emb_bias", torch.cat([p.bias for p in projections]).detach().clone())
        self.emb_sizes = [p.out_features for p in projections]
        self.register_buffer("emb_table", None)
        if timestep_table:
            # Row t = time_projections(t), computed as the step would (same dtype), in one batch; the
            # concatenated projection weights (28 M) are not needed after that.
            with torch.no_grad():
                self.emb_table = self.time_projections(torch.arange(timestep_table, device=self.emb_weight.device))
            self.emb_weight = self.emb_bias = None
        cross = [b.attn2 for b in self.transformer_blocks]
        # Per block (k rows, then v rows): one GEMM of the context gives every key and value.
        self.register_buffer("kv_weight", torch.cat([w for a in cross for w in (a.to_k.weight, a.to_v.weight)])
                             .detach().clone())
        self.kv_sizes = [a.to_k.out_features for a in cross for _ in range(2)]
        self.qkv_names = [f"qkv_weight_{i}" for i in range(len(self.transformer_blocks))]
        for name, b in zip(self.qkv_names, self.transformer_blocks, strict=True):
            self.register_buffer(name, torch.cat([b.attn1.to_q.weight, b.attn1.to_k.weight, b.attn1.to_v.weight])
                                 .detach().clone())

    def extra_repr(self) -> str:
        table = 0 if self.emb_table is None else self.emb_table.shape[0]
        return f"flash_small_attention={self.flash_small_attention}, timestep_table={table}"

    def context_kv(self, context: Tensor) -> Tensor:
        """(B, M, context_dim) -> (B, M, sum of 2 x inner dims): every cross-attention's keys and values."""
        return F.linear(context.to(self.kv_weight.dtype), self.kv_weight)

    def time_projections(self, timesteps: Tensor) -> Tensor:
        """(B,) timesteps -> (B, sum of the ResBlocks' projection sizes): every ResBlock's `emb_layers(emb)`
        (without a table only: a table replaces the weights this needs)."""
        emb = self.unet.time_embedding(timesteps, timesteps)
        # Same as each ResBlock's emb_layers (SiLU, Linear), all at once.
        return F.linear(F.silu(emb), self.emb_weight, self.emb_bias)

    def forward(self, x: Tensor, timesteps: Tensor, kv: Tensor) -> Tensor:
        timesteps = batch_timesteps(timesteps, x)
        if self.emb_table is None:
            projections = self.time_projections(timesteps)
        else:
            # Clamped: an out-of-range index would be a device-side assert inside a CUDA graph. The
            # samplers only ask for trained timesteps, which the table covers.
            projections = self.emb_table[timesteps.clamp(0, self.emb_table.shape[0] - 1)]
        emb_outs = iter(torch.split(projections, self.emb_sizes, dim=1))
        kvs = iter(torch.split(kv, self.kv_sizes, dim=-1))
        qkv_weights = iter([getattr(self, name) for name in self.qkv_names])

        def transformer_block(block: BasicTransformerBlock, tokens: Tensor) -> Tensor:
            return _transformer_block(block, tokens, next(qkv_weights), next(kvs), next(kvs),
                                      self.flash_small_attention)

        return self.unet.run_blocks(x, lambda block, h: block.forward_projected(h, next(emb_outs)),
                                    lambda layer, h: layer.run_tokens(h, transformer_block))


def _transformer_block(block: BasicTransformerBlock, x: Tensor, qkv_weight: Tensor, k: Tensor, v: Tensor,
                       flash_small_attention: bool = False) -> Tensor:
    """`BasicTransformerBlock.forward` with fused self-attention projections and precomputed cross keys/values."""
    q1, k1, v1 = F.linear(block.norm1(x), qkv_weight).chunk(3, dim=-1)
    with _attention_backends(q1.shape[1], k1.shape[1], flash_small_attention):
        x = x + block.attn1.attend(q1, k1, v1)
    q2 = block.attn2.to_q(block.norm2(x))
    with _attention_backends(q2.shape[1], k.shape[1], flash_small_attention):
        x = x + block.attn2.attend(q2, k, v)
    return x + block.ff(block.norm3(x))


WITHOUT_CUDNN = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def prefers_flash(queries: int, keys: int) -> bool:
    """16 queries or fewer, or a cross-attention of 256 or fewer: where flash beat cuDNN on the H200
    (at 256 and 64 tokens cuDNN won the self-attentions)."""
    return queries <= 16 or (keys > queries and queries <= 256)


def _attention_backends(queries: int, keys: int, flash_small_attention: bool) -> AbstractContextManager:
    """Every backend but cuDNN where `prefers_flash` (with the option on); else the caller's settings."""
    if flash_small_attention and prefers_flash(queries, keys):
        return sdpa_kernel(list(WITHOUT_CUDNN))
    return nullcontext()
