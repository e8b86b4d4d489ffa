"""`python -m medusa_lib.train_kd`: the seed's command (implemented in `medusa_lib.cli`)."""

from medusa_lib.cli import train_kd_main

if __name__ == "__main__":
    raise SystemExit(train_kd_main())
