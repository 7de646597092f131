"""The command lines users type: each module's `main` parses flags and calls library code.

`scripts/<name>.py` runs one of them from a checkout; `pyproject.toml` installs each as a
console command (`carvana-train`, `carvana-tune`, `carvana-predict`, `carvana-export`,
`carvana-leaderboard`) through its `cli`, which prints a user-fixable error as one line.
"""
