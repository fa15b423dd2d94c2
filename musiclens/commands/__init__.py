"""CLI sub-commands: one module per stage, each with `register(subparsers)`.

Keep these thin: parse options into the stage's config dataclass, call the
library, print a short summary. The work lives in the stage packages.
"""
