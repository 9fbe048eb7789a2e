"""`python -m rulesd` is the same as the `rulesd` command (whose entry point is `main` here)."""

import sys

from rulesd import collector


def main() -> int:
    """Run the command line; its start-up paused the collector (see `rulesd.collector`)."""
    collector.pause()
    try:
        from rulesd.cli import main as run_command

        return run_command()  # (some dependencies are imported only by the commands that use them)
    except ModuleNotFoundError as exc:
        # `python -m rulesd` from a checkout, with an interpreter or virtualenv where rulesd was not
        # installed (or was installed before a dependency was added): say what to do, not a traceback.
        if exc.name is None or exc.name.split(".")[0] == "rulesd":
            raise
        print(
            f"rulesd: cannot start: the Python module {exc.name!r} is not installed for {sys.executable}; "
            "install rulesd with its dependencies into this environment: pip install . "
            "(or pip install -e . in a checkout)",
            file=sys.stderr,
        )
        return 2
    finally:
        collector.resume()  # whatever the command did: never left off


if __name__ == "__main__":
    sys.exit(main())
