"""The UNet's forward with the work that does not change between sampling steps taken out of the step.

During one generation the context (the condition fuser's tokens) is the same at every step, so the
keys and values of the 21 cross-attentions are a function of the generation, not of the step; the 35
ResBlock time projections depend on the timestep alone. `HoistedUNet` therefore

* computes every cross-attention's keys and values in one GEMM per generation (`context_kv`),
* computes the 35 time projections of a step in one GEMM (their weights concatenated),
* projects self-attention queries, keys and values in one GEMM per block (weights concatenated),

and runs everything else through `UNetModel.run_blocks`, the skeleton `UNetModel.forward` runs too. At batch 1
a step is bound by kernel count, not arithmetic: this removes about 110 small GEMMs from every step.
The result is the same function; only GEMM summation order may differ.

The concatenated weights are a snapshot of the UNet's weights at construction (the fast path's UNet
is a frozen copy anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uvidm_backend.models.attention import BasicTransformerBlock, SpatialTransformer
from uvidm_backend.models.unet import ResBlock, UNetModel


def _layers_in_forward_order(unet: UNetModel) -> list[nn.Module]:
    return [layer for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks] for layer in block]


class HoistedUNet(nn.Module):
    """`forward(x, timesteps, kv)` = `unet(x, timesteps, context)` where `kv = context_kv(context)`."""

    def __init__(self, unet: UNetModel):
        super().__init__()
        self.unet = unet
        layers = _layers_in_forward_order(unet)
        self.resblocks = [layer for layer in layers if isinstance(layer, ResBlock)]
        self.transformer_blocks = [block for layer in layers if isinstance(layer, SpatialTransformer)
                                   for block in layer.transformer_blocks]
        projections = [block.emb_layers[1] for block in self.resblocks]
        self.register_buffer("emb_weight", torch.cat([p.weight for p in projections]).detach().clone())
        self.register_buffer("emb_bias", torch.cat([p.bias for p in projections]).detach().clone())
        self.emb_sizes = [p.out_features for p in projections]
        cross = [b.attn2 for b in self.transformer_blocks]
        # Per block (k rows, then v rows): one GEMM of the context gives every key and value.
        self.register_buffer("kv_weight", torch.cat([w for a in cross for w in (a.to_k.weight, a.to_v.weight)])
                             .detach().clone())
        self.kv_sizes = [a.to_k.out_features for a in cross for _ in range(2)]
        self.qkv_names = [f"qkv_weight_{i}" for i in range(len(self.transformer_blocks))]
        for name, b in zip(self.qkv_names, self.transformer_blocks, strict=True):
            self.register_buffer(name, torch.cat([b.attn1.to_q.weight, b.attn1.to_k.weight, b.attn1.to_v.weight])
                                 .detach().clone())

    def context_kv(self, context: Tensor) -> Tensor:
        """(B, M, context_dim) -> (B, M, sum of 2 x inner dims): every cross-attention's keys and values."""
        return F.linear(context.to(self.kv_weight.dtype), self.kv_weight)

    def forward(self, x: Tensor, timesteps: Tensor, kv: Tensor) -> Tensor:
        emb = self.unet.time_embedding(timesteps, x)
        # Same as each ResBlock's emb_layers (SiLU, Linear), all at once.
        emb_outs = iter(torch.split(F.linear(F.silu(emb), self.emb_weight, self.emb_bias), self.emb_sizes, dim=1))
        kvs = iter(torch.split(kv, self.kv_sizes, dim=-1))
        qkv_weights = iter([getattr(self, name) for name in self.qkv_names])

        def transformer_block(block: BasicTransformerBlock, tokens: Tensor) -> Tensor:
            return _transformer_block(block, tokens, next(qkv_weights), next(kvs), next(kvs))

        return self.unet.run_blocks(x, lambda block, h: block.forward_projected(h, next(emb_outs)),
                                    lambda layer, h: layer.run_tokens(h, transformer_block))


def _transformer_block(block: BasicTransformerBlock, x: Tensor, qkv_weight: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """`BasicTransformerBlock.forward` with fused self-attention projections and precomputed cross keys/values."""
    q1, k1, v1 = F.linear(block.norm1(x), qkv_weight).chunk(3, dim=-1)
    x = x + block.attn1.attend(q1, k1, v1)
    x = x + block.attn2.attend(block.attn2.to_q(block.norm2(x)), k, v)
    return x + block.ff(block.norm3(x))
