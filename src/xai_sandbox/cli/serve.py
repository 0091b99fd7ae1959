"""``xai-sandbox serve``: run the REST service and the web console."""

from __future__ import annotations

from typing import Annotated

import typer

from xai_sandbox.cli.common import app, console, fail
from xai_sandbox.errors import XaiSandboxError


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    demo: Annotated[bool, typer.Option(help="register the German credit models, create "
                                       "demo principals and print their keys")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    workers: Annotated[int, typer.Option(min=1, max=64, help="server processes (each with "
                                         "its own job threads; on PostgreSQL they share "
                                         "the rate limits)")] = 1,
) -> None:
    """Run the REST service (settings from XAI_SANDBOX_* environment variables)."""
    import uvicorn

    from xai_sandbox.service import create_app
    from xai_sandbox.settings import Settings

    settings = Settings()
    if demo:
        from xai_sandbox.service.demo import setup_demo
        from xai_sandbox.store import Store

        store = Store(settings)
        try:
            made = setup_demo(store)
        except XaiSandboxError as exc:
            raise fail(exc) from exc
        finally:
            store.close()
        console.print("demo principals and their API keys (shown once):")
        for name, key in made["keys"].items():
            print(f"  {name:16} {key}")
        for name, decision in made["decisions"].items():
            console.print(f"{name}'s decision: {decision}")
        print(f"try: curl -H 'Authorization: Bearer {made['keys']['alice']}' "
              f"http://{host}:{port}/v1/decisions")
        console.print(f"API documentation: http://{host}:{port}/docs")
    console.print(f"web console: http://{host}:{port}/console/ (sign in with an API key)")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    access_log=False)
    else:  # each process builds the app from the same environment
        uvicorn.run("xai_sandbox.service.app:create_app", factory=True, workers=workers,
                    host=host, port=port, log_level=log_level, access_log=False)
