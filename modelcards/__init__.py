"""Built-in model cards and lineups (YAML files), shipped inside the package as tui.modelcards."""
