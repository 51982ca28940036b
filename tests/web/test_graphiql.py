"""GraphiQL at /graphql in a real browser: served from the package, no CDN, runs queries."""

from __future__ import annotations

from typing import Any

import httpx

from polyport.testing import RunningNode


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _open_ide(watch: Any, site: RunningNode) -> Any:
    page = watch.page
    page.goto(site.url + "/graphql")
    # The editors are ready once GraphiQL has mounted CodeMirror in the query editor.
    page.wait_for_selector(".graphiql-query-editor .CodeMirror")
    return page


EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"


def _set_query(page: Any, query: str) -> None:
    """Type ``query`` into the editor and wait until GraphiQL has parsed it.

    GraphiQL reparses the editor 100 ms after a change (debounced), and that
    parse decides the transport: a subscription goes over the WebSocket.
    """
    page.evaluate(f"(text) => {EDITOR}.setValue(text)", query)
    page.wait_for_function(f"(text) => {EDITOR}.documentAST?.loc?.source?.body === text", arg=query)


def _run(page: Any) -> Any:
    page.locator(".graphiql-execute-button").click()
    return page.locator(".graphiql-response")


def test_the_ide_page_and_its_assets_come_from_the_node(site: RunningNode) -> None:
    """A browser's GET /graphql is GraphiQL's page; its script and styles are the node's own."""
    page = httpx.get(site.url + "/graphql", headers={"accept": "text/html"}, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/graphiql/graphiql.js" in page.text and "https://" not in page.text
    for asset, media in (("graphiql.js", "text/javascript"), ("graphiql.css", "text/css")):
        answer = httpx.get(f"{site.url}/static/graphiql/{asset}", timeout=10)
        assert answer.status_code == 200, asset
        assert answer.headers["content-type"].startswith(media), asset
    # A GraphQL client asking for JSON still gets GraphQL, not the page.
    data = httpx.get(
        site.url + "/graphql",
        params={"query": "{ __typename }"},
        headers={"accept": "application/json"},
        timeout=10,
    )
    assert data.json() == {"data": {"__typename": "Query"}}


def test_graphiql_runs_the_social_profile_query(page: Any, site: RunningNode) -> None:
    """The default query (profile + posts + comments) runs and its result is shown."""
    expect = _expect()
    ide = _open_ide(page, site)
    expect(ide.locator(".graphiql-query-editor")).to_contain_text("posts(limit: 5)")
    response = _run(ide)
    expect(response).to_contain_text("Getting Started with GraphQL")
    expect(response).to_contain_text("Thanks for sharing")
    loaded = [url for url in page.requests if "/static/graphiql/" in url]
    assert any(url.endswith("graphiql.js") for url in loaded)
    assert any(url.endswith("graphiql.css") for url in loaded)


def test_graphiql_runs_a_typed_query_and_shows_errors(page: Any, site: RunningNode) -> None:
    """A query typed into the editor runs against the node; a bad one shows the GraphQL error."""
    expect = _expect()
    ide = _open_ide(page, site)
    _set_query(ide, "{ product(id: 2) { name price } }")
    response = _run(ide)
    expect(response).to_contain_text("27-inch monitor")
    expect(response).to_contain_text("279.00")
    _set_query(ide, "{ product(id: 2) { nmae } }")
    response = _run(ide)
    expect(response).to_contain_text("GRAPHQL_VALIDATION_FAILED")


def test_graphiql_subscribes_over_graphql_ws(page: Any, site: RunningNode) -> None:
    """A subscription in GraphiQL (graphql-ws from npm, in Chromium) shows a post made over REST."""
    expect = _expect()
    sockets: list[str] = []
    page.page.on("websocket", lambda socket: sockets.append(socket.url))
    ide = _open_ide(page, site)
    # From the start of this node's log: the post shows however late the subscription starts.
    _set_query(ide, 'subscription { postsCreated(after: "earliest") { type data { title } } }')
    response = _run(ide)
    expect(ide.locator(".graphiql-execute-button[aria-label^='Stop']")).to_be_visible()
    title = "Seen live in GraphiQL"
    created = httpx.post(site.url + "/v1/posts", json={"user_id": 1, "title": title}, timeout=10)
    assert created.status_code == 201
    expect(response).to_contain_text(title)
    expect(response).to_contain_text("posts.created")
    assert sockets == [site.url.replace("http://", "ws://") + "/graphql"]
