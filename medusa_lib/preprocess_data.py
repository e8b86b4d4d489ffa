"""`python -m medusa_lib.preprocess_data`: the seed's command (implemented in `medusa_lib.cli`)."""

from medusa_lib.cli import preprocess_data_main

if __name__ == "__main__":
    raise SystemExit(preprocess_data_main())
