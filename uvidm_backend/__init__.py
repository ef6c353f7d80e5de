"""UV-IDM backend: photo → face → BFM fit → UV texture (latent diffusion) → mesh → files."""

__version__ = "0.1.0"
