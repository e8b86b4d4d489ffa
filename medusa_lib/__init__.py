"""medusa_lib: Medusa speculative decoding (Cai et al., 2024), small enough to read."""
