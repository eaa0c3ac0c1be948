"""The JSON Schema(s) of the recipe language, shipped inside the package as `runner.schemas`."""
