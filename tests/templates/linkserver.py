"""A real HTTP server on loopback that plays the web a template links to: good pages, 404s,
500s, redirect loops, slow answers, images that are not images, images that are too big.
It runs on its own event loop in a thread, so sync tests (CLI, API) can use it too, and it
counts the requests each path gets."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")
BIG = 3 * 1024 * 1024


class LinkServer:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.url = ""
        self.slow = 3.0

    def app(self) -> web.Application:
        app = web.Application()

        @web.middleware
        async def count(request: web.Request, handler: object) -> web.StreamResponse:
            self.hits[request.path] += 1
            return await handler(request)  # type: ignore[operator,no-any-return]

        app.middlewares.append(count)

        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="<html>fine</html>", content_type="text/html")

        async def missing(_: web.Request) -> web.Response:
            return web.Response(status=404, text="not here")

        async def broken(_: web.Request) -> web.Response:
            return web.Response(status=500, text="oops")

        async def loop_a(_: web.Request) -> web.Response:
            raise web.HTTPFound("/loop/b")

        async def loop_b(_: web.Request) -> web.Response:
            raise web.HTTPFound("/loop/a")

        async def chain(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            raise web.HTTPFound(f"/chain/{n + 1}")

        async def moved(_: web.Request) -> web.Response:
            raise web.HTTPMovedPermanently("/ok")

        async def to_metadata(_: web.Request) -> web.Response:
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

        async def slow(_: web.Request) -> web.Response:
            await asyncio.sleep(self.slow)
            return web.Response(text="late")

        async def png(_: web.Request) -> web.Response:
            return web.Response(body=PNG, content_type="image/png")

        async def fake_png(_: web.Request) -> web.Response:
            return web.Response(text="<html>login</html>", content_type="text/html")

        async def big_png(_: web.Request) -> web.Response:
            return web.Response(body=b"\0" * BIG, content_type="image/png")

        async def big_chunked(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(BIG // 65536):
                await resp.write(b"\0" * 65536)
            await resp.write_eof()
            return resp

        app.router.add_get("/ok", ok)
        app.router.add_get("/missing", missing)
        app.router.add_get("/broken", broken)
        app.router.add_get("/loop/a", loop_a)
        app.router.add_get("/loop/b", loop_b)
        app.router.add_get("/chain/{n}", chain)
        app.router.add_get("/moved", moved)
        app.router.add_get("/to-metadata", to_metadata)
        app.router.add_get("/slow", slow)
        app.router.add_get("/img/ok.png", png)
        app.router.add_get("/img/fake.png", fake_png)
        app.router.add_get("/img/big.png", big_png)
        app.router.add_get("/img/big-chunked.jpg", big_chunked)
        return app


@contextmanager
def link_server() -> Iterator[LinkServer]:
    server = LinkServer()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(server.app(), access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}"
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "link server did not start"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
