"""The `gateway` command line (click)."""

import click


@click.group()
def main() -> None:
    """AutoCore Gateway: the MQTT hub of a vehicle."""
