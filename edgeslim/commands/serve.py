"""`edgeslim serve BUNDLE`: the web bundle from a small static server (loopback by default)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("serve")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: 0.0.0.0 (or the laptop's address) to serve the clinic's network.")
@click.option("--port", "-p", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")
@click.option("--cert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="PEM certificate: serve HTTPS, which tablets need to install the app for offline use.")
@click.option("--key", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The certificate's private key (PEM), if not inside --cert.")
@click.option("--quiet", "-q", is_flag=True, help="Do not log each request.")
def command(bundle, host, port, cert, key, quiet):
    """Serve a web bundle (edgeslim build --target web) to browsers on this machine or the LAN."""
    from edgeslim.bundle.web import make_server

    server = make_server(bundle, host=host, port=port, certfile=cert, keyfile=key, quiet=quiet)
    bound_host, bound_port = server.server_address[:2]
    scheme = "https" if cert else "http"
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host
    click.echo(f"serving {bundle} at {scheme}://{shown}:{bound_port}/  (Ctrl-C stops)", err=False)
    if bound_host in ("0.0.0.0", "::"):
        click.echo("listening on every address of this machine: tablets on the same network open "
                   f"{scheme}://<this laptop's address>:{bound_port}/")
        if not cert:
            click.echo("note: over plain http from another machine, browsers run the page but do not "
                       "install it for offline use; give --cert/--key, or copy the folder.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
