"""The ``cdcd`` command: Conditional Discrete Contrastive Diffusion (Zhu et al. 2022)."""
