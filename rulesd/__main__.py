"""`python -m rulesd` is the same as the `rulesd` command."""

import sys

try:
    from rulesd.cli import main

    status = main()  # (some dependencies are imported only by the commands that use them)
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
    sys.exit(2)

sys.exit(status)
