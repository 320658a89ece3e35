"""The command groups of `vectoros`, one module each; app/cli.py registers them."""
