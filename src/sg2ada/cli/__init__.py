"""Command-line interface: `sg2ada <command> ...`. One module per command, see main.py."""
