"""The `lichen` command line: typer verbs that parse arguments, call lower layers and print (rich tables or `--json`).
"""
