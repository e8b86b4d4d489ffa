"""medusa_lib: Medusa speculative decoding (Cai et al., 2024), small enough to read.

    from medusa_lib import load_base, MedusaModel, Tree, medusa_generate
"""

from medusa_lib.decoding import greedy_generate, medusa_generate
from medusa_lib.heads import MedusaHeads, MedusaModel, ResBlock
from medusa_lib.models import load_base
from medusa_lib.tree import Tree, expected_accept_length

__all__ = ["load_base", "MedusaModel", "MedusaHeads", "ResBlock", "Tree", "expected_accept_length",
           "medusa_generate", "greedy_generate"]
