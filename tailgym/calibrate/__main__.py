from tailgym.calibrate.cli import cli

raise SystemExit(cli())
