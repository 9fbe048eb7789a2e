"""`python -m rulesd.schema_checks`: write the generated quick checks again."""

from rulesd.schema_checks import main

main()
