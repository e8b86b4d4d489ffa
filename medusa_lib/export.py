"""`python -m medusa_lib.export`: export heads to vLLM / FasterDecoding (implemented in `medusa_lib.cli`)."""

from medusa_lib.cli import export_main

if __name__ == "__main__":
    raise SystemExit(export_main())
