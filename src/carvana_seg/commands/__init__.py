"""Every command line users type: each module's `main` parses flags and calls library code.

`scripts/<name>.py` is a shim that runs one of them from a checkout; `pyproject.toml` installs
the most used as console commands (`carvana-train`, `carvana-tune`, `carvana-predict`,
`carvana-export`, `carvana-leaderboard`) through their `cli`, which prints a user-fixable
error as one line. `cli.py` holds what they share: the parser (`command_parser`), config
arguments (`parse_config_args`), the console command (`console`) and the one-line errors.
"""
