"""`gateway simulate`: a fleet of simulated ESP32 devices (to be built)."""

import click


@click.command()
def simulate() -> None:
    """Run simulated devices against a broker."""
    raise click.ClickException("the simulator is not built yet")
