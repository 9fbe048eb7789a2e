"""rulesd: tail events, evaluate YAML trigger rules, page through OpsGenie."""

# The one place the version is written; pyproject.toml reads it from here (asking the
# installed package's metadata instead costs every command ~50 ms of start-up).
__version__ = "0.1.0"
