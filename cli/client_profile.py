"""``pt client profile``: whether other users can see your portfolio (private by default)."""

from __future__ import annotations

import click

from .client import client
from .client import options as _options
from .client import server_errors as _server_errors
from .client import stored_session as _stored_session
from .client import wants_json as _wants_json
from .common import json_option, print_json


@client.command()
@click.argument("visibility", type=click.Choice(["public", "private"]), required=False)
@json_option
def profile(visibility: str | None, as_json: bool) -> None:
    """Show whether your profile is public, or make it public or private.

    Private (the default): other users cannot see your positions or trades, nor
    tell that you exist. Public: they see your positions and trades (never your
    cash, e-mail or order ids).
    """
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        if visibility is not None:
            message = conn.set_profile(visibility == "public")
        info = conn.user_info()
    public = bool(info.public_profile)
    if _wants_json(as_json):
        print_json({"username": info.username, "public": public})
        return
    if visibility is not None:
        click.echo(message[0].upper() + message[1:] + ".")
    else:
        click.echo(f"Your profile is {'public' if public else 'private'}.")
