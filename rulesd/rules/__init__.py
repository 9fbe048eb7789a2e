"""The rule language: model, loading, compiling."""
