"""``holofs config``: the effective settings and where each came from."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    group.add_command(config_cmd)


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def config_cmd(as_json: bool) -> None:
    """Show effective settings (flags > HOLOFS_* env > settings file > defaults)."""
    from ..config import load_settings
    from ..paths import default_config_file
    from .output import emit_json

    settings = load_settings({})
    if as_json:
        emit_json({"config_file": str(default_config_file()), "settings": settings.as_dict()})
        return
    click.echo(f"# settings file: {default_config_file()}")
    for name, item in settings.as_dict().items():
        value = item["value"]
        shown = ",".join(value) if isinstance(value, list) else value
        click.echo(f"{name:<14} {shown!s:<40} ({item['source']})")
