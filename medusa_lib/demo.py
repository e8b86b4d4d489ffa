"""`python -m medusa_lib.demo`: `make demo` (implemented in `medusa_lib.cli`)."""

from medusa_lib.cli import demo_main

if __name__ == "__main__":
    raise SystemExit(demo_main())
