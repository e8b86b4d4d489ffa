"""`python -m medusa_lib.decode_tree`: the seed's command (implemented in `medusa_lib.cli`)."""

from medusa_lib.cli import decode_tree_main

if __name__ == "__main__":
    raise SystemExit(decode_tree_main())
