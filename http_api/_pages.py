"""The app's browser pages (static/*.html), served as they are on disk with their shared script inline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from azurefunctions.extensions.http.fastapi import HTMLResponse, Response

from ._errors import RequestError

# Where a page loads what the pages share (static/page.js): served inline, so a page is one response.
_SHARED_SCRIPT_TAG = '<script src="page.js"></script>'


async def html_page(path: Path | None, missing: str) -> Response:
    """A static page of the app, read on every request (never cached by the browser), or a 404 saying ``missing``.

    The page's ``<script src="page.js"></script>`` is replaced with that file's text (it sits beside
    the page), so that the page needs no route of its own for its shared script.
    """
    if path is None:
        raise RequestError(missing, 404)
    try:
        html = await asyncio.to_thread(path.read_text, encoding="utf-8")
        if _SHARED_SCRIPT_TAG in html:
            shared = await asyncio.to_thread((path.parent / "page.js").read_text, encoding="utf-8")
            html = html.replace(_SHARED_SCRIPT_TAG, f"<script>\n{shared}</script>", 1)
    except FileNotFoundError as error:
        raise RequestError(missing, 404) from error
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})
