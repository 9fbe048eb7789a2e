"""rulesd: tail events, evaluate YAML trigger rules, page through OpsGenie."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rulesd")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
