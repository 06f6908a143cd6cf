"""CLI sub-commands, one module each; ``graphopt.cli`` registers them (``register(app)``)."""
