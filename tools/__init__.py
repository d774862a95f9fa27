"""Project tooling that is not part of the installed product (wheels, wheelhouses)."""
