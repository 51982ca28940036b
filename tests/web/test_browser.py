"""The docs page and the dashboard in a real browser (Debian's Chromium via Playwright)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from polyport.testing import RunningNode

ORDER = {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]}


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _open(watch: Any, site: RunningNode, path: str) -> Any:
    page = watch.page
    page.goto(site.url + path)
    # Both pages set data-ready once their documents are fetched and rendered.
    page.wait_for_selector("body[data-ready=true]")
    return page


# -- /docs ------------------------------------------------------------------------------


def test_docs_render_operations_and_schemas(page: Any, site: RunningNode) -> None:
    """/docs shows the API, its operations grouped by tag and its component schemas."""
    expect = _expect()
    docs = _open(page, site, "/docs")
    expect(docs.locator(".info h1")).to_contain_text("shop API")
    operation = docs.locator("#get_user")
    expect(operation).to_be_visible()
    expect(operation.locator("summary")).to_contain_text("/v1/users/{id}")
    expect(operation.locator(".method")).to_have_text("GET")
    expect(docs.locator("#tag-users")).to_contain_text("Customers")
    expect(docs.locator("#schema-User")).to_be_visible()
    operation.locator("summary").first.click()
    body = operation.locator(".op-body")
    expect(body).to_contain_text("optional")  # dev mode: anonymous calls allowed
    expect(body.locator("table.fields").first).to_contain_text("id")
    # The 200 response's User schema is resolved into a field table.
    expect(body.locator("table.responses")).to_contain_text("email")


def test_docs_resolve_nested_refs_in_request_bodies(page: Any, site: RunningNode) -> None:
    """A deep link opens the operation; nested $refs render as tables; the example is valid."""
    expect = _expect()
    docs = _open(page, site, "/docs#create_order")
    operation = docs.locator("#create_order")
    expect(operation).to_have_attribute("open", "")
    expect(operation.locator(".op-body")).to_contain_text("OrderLine")
    expect(operation.locator(".op-body")).to_contain_text("quantity")
    operation.locator("details.try-it > summary").click()
    example = json.loads(operation.locator("textarea[name=body]").input_value())
    assert example == ORDER


def test_docs_try_it_calls_the_node(page: Any, site: RunningNode) -> None:
    """'Try it' on GET /v1/users/{id} with id 1 shows 200 and Alice."""
    expect = _expect()
    docs = _open(page, site, "/docs")
    operation = docs.locator("#get_user")
    operation.locator("summary").first.click()
    operation.locator("details.try-it > summary").click()
    operation.locator("input[name=id]").fill("1")
    operation.get_by_role("button", name="Send").click()
    expect(operation.locator(".exchange-status")).to_have_attribute("data-status", "200")
    expect(operation.locator(".exchange-status")).to_contain_text("200")
    expect(operation.locator(".exchange-body")).to_contain_text("Alice")
    expect(operation.locator(".exchange-request")).to_contain_text("GET /v1/users/1 HTTP/1.1")


def test_docs_try_it_sends_credentials_and_shows_errors(
    page: Any,
    site: RunningNode,
) -> None:
    """The stored bearer token goes out (masked on screen); its refusal shows as a 401."""
    expect = _expect()
    docs = _open(page, site, "/docs#get_user")
    docs.locator(".credentials > summary").click()
    docs.locator(".credentials input[name=bearer]").fill("not-a-real-token-1234")
    operation = docs.locator("#get_user")
    operation.locator("details.try-it > summary").click()
    operation.locator("input[name=id]").fill("999999")
    with docs.expect_request(re.compile(r"/v1/users/999999$")) as sent:
        operation.get_by_role("button", name="Send").click()
    assert sent.value.headers["authorization"] == "Bearer not-a-real-token-1234"
    request_view = operation.locator(".exchange-request")
    expect(request_view).to_contain_text("••••1234")
    expect(request_view).not_to_contain_text("not-a-real-token")
    # Dev mode lets anonymous callers in, but a token it cannot verify is refused.
    expect(operation.locator(".exchange-status")).to_have_attribute("data-status", "401")
    expect(operation.locator(".exchange-body")).to_contain_text("UNAUTHENTICATED")


def test_docs_filter_hides_what_does_not_match(page: Any, site: RunningNode) -> None:
    """Typing in the filter box leaves only matching operations and schemas."""
    expect = _expect()
    docs = _open(page, site, "/docs")
    docs.locator("#search").fill("multiply")
    expect(docs.locator("#get_user")).to_be_hidden()
    expect(docs.locator("#multiply")).to_be_visible()
    expect(docs.locator("#tag-users")).to_be_hidden()
    expect(docs.locator("#search-count")).to_contain_text("shown")
    docs.locator("#search").press("Escape")
    expect(docs.locator("#get_user")).to_be_visible()


def test_schema_view_stops_at_recursion(page: Any, site: RunningNode) -> None:
    """A self-referencing schema renders (and builds an example) without looping."""
    docs = _open(page, site, "/docs")
    result = docs.evaluate("""async () => {
        const {schemaView} = await import("/static/schema-view.js");
        const {exampleFor} = await import("/static/openapi.js");
        const spec = {components: {schemas: {Node: {type: "object", properties: {
            name: {type: "string"},
            children: {type: "array", items: {$ref: "#/components/schemas/Node"}},
            parent: {anyOf: [{$ref: "#/components/schemas/Node"}, {type: "null"}]}}}}}};
        const ref = {$ref: "#/components/schemas/Node"};
        const view = schemaView(spec, ref);
        return {text: view.textContent, example: exampleFor(spec, ref)};
    }""")
    assert "recursive" in result["text"]
    assert result["example"]["name"] == "name"
    assert result["example"]["children"] == [None]


# -- the dashboard ------------------------------------------------------------------------


def test_dashboard_shows_service_and_catalog(page: Any, site: RunningNode) -> None:
    """/ shows the service, the dev banner and the catalog of methods and events by pattern."""
    expect = _expect()
    dashboard = _open(page, site, "/")
    expect(dashboard.locator("#service h1")).to_have_text("shop")
    expect(dashboard.locator("#dev-banner")).to_be_visible()
    catalog = dashboard.locator("#catalog")
    expect(catalog.locator("thead")).to_contain_text("REST")
    expect(catalog.locator("thead")).to_contain_text("long polling")
    expect(catalog.locator('tr[data-target="create_order"]')).to_contain_text("POST /v1/orders")
    expect(catalog.locator('tr[data-target="orders.created"]')).to_contain_text(
        "channel=orders/created"
    )
    for link in ("/docs", "/openapi.json", "/metrics"):
        expect(dashboard.locator(f'#service a[href="{link}"]')).to_be_visible()


#: How far the catalog's box and the page can scroll: [across, down].
OVERFLOW = """() => {
  const over = (e) => [e.scrollWidth - e.clientWidth, e.scrollHeight - e.clientHeight];
  return {wrap: over(document.querySelector("#catalog").parentElement),
          page: over(document.documentElement)};
}"""


def test_dashboard_catalog_shows_every_pattern_on_a_wide_screen(
    wide_page: Any, site: RunningNode
) -> None:
    """At 1920 px every one of the catalog's 15 pattern columns is in view, and the page is
    the only thing that scrolls: the catalog has no box of its own, nothing scrolls sideways."""
    expect = _expect()
    dashboard = _open(wide_page, site, "/")
    heads = dashboard.locator("#catalog thead th")
    expect(heads).to_have_count(1 + 15)
    for column in range(1 + 15):
        expect(heads.nth(column)).to_be_in_viewport(ratio=1)
    expect(dashboard.locator('#catalog tr[data-target="orders.created"] td').last).to_be_visible()
    sizes = dashboard.evaluate(OVERFLOW)
    assert sizes["wrap"] == [0, 0]  # no scrollbar of its own, either way
    assert sizes["page"][0] == 0 and sizes["page"][1] > 0  # the page scrolls down, not across


def test_dashboard_catalog_scrolls_sideways_in_a_narrow_window(
    page: Any, site: RunningNode
) -> None:
    """At 1400 px the catalog scrolls sideways inside its panel (never the page), not down."""
    dashboard = _open(page, site, "/")
    sizes = dashboard.evaluate(OVERFLOW)
    assert sizes["wrap"][0] > 0 and sizes["wrap"][1] == 0
    assert sizes["page"][0] == 0


def test_dashboard_feed_shows_new_events(page: Any, site: RunningNode) -> None:
    """An order created over REST appears in the live feed (long polling) within seconds."""
    expect = _expect()
    dashboard = _open(page, site, "/")
    expect(dashboard.locator("#feed-status")).to_have_text("live")
    response = httpx.post(f"{site.url}/v1/orders", json=ORDER, timeout=10)
    assert response.status_code == 201
    order_id = response.json()["id"]
    event = dashboard.locator('#feed li[data-type="orders.created"]').first
    expect(event).to_be_visible(timeout=10_000)
    expect(event).to_contain_text(f'"id":{order_id}')
    # Newest first: the order event was published after the stock change it caused.
    expect(dashboard.locator("#feed li").first).to_have_attribute("data-type", "orders.created")


def test_dashboard_feed_restarts_after_recovery_failed(page: Any, site: RunningNode) -> None:
    """A 410 'recovery failed' is shown, and the feed continues from after=now."""
    expect = _expect()
    dashboard = page.page
    polls: list[str] = []
    answered_gone = []

    def events(route: Any) -> None:
        polls.append(route.request.url)
        # Answer the first long poll that resumes from a real cursor with the
        # node's own 410, as after a log reset; let everything else through.
        if not answered_gone and "after=now" not in route.request.url:
            answered_gone.append(route.request.url)
            route.fulfill(
                status=410,
                content_type="application/problem+json",
                body=json.dumps(
                    {
                        "type": "urn:polyport:problem:recovery-failed",
                        "title": "Gone",
                        "status": 410,
                        "detail": "history trimmed",
                        "code": "RECOVERY_FAILED",
                    }
                ),
            )
        else:
            route.continue_()

    dashboard.route(re.compile(r"/v1/events\?"), events)
    _open(page, site, "/")
    notice = dashboard.locator("#feed-notice")
    expect(notice).to_contain_text("Recovery failed", timeout=10_000)
    expect(notice).to_contain_text("history trimmed")
    expect(dashboard.locator("#feed-status")).to_have_text("live")
    assert any("after=now" in url for url in polls[polls.index(answered_gone[0]) + 1 :])
    httpx.post(f"{site.url}/v1/orders", json=ORDER, timeout=10).raise_for_status()
    expect(dashboard.locator('#feed li[data-type="orders.created"]').first).to_be_visible(
        timeout=10_000
    )
    dashboard.unroute(re.compile(r"/v1/events\?"))


def test_dashboard_feed_backs_off_on_errors(page: Any, site: RunningNode) -> None:
    """A failing poll shows 'reconnecting', honours Retry-After, then goes live again."""
    expect = _expect()
    dashboard = page.page
    failures = []

    def events(route: Any) -> None:
        if not failures:
            failures.append(route.request.url)
            route.fulfill(
                status=503,
                headers={"retry-after": "1"},
                content_type="application/problem+json",
                body='{"status":503,"title":"Service Unavailable","detail":"busy"}',
            )
        else:
            route.continue_()

    dashboard.route(re.compile(r"/v1/events\?"), events)
    _open(page, site, "/")
    expect(dashboard.locator("#feed-notice")).to_contain_text("503")
    expect(dashboard.locator("#feed-notice")).to_contain_text("retrying in 1.0 s")
    expect(dashboard.locator("#feed-status")).to_have_text("live", timeout=10_000)
    dashboard.unroute(re.compile(r"/v1/events\?"))


def test_dashboard_playground_shows_the_exchange(page: Any, site: RunningNode) -> None:
    """The playground calls a REST operation and shows request, response and latency."""
    expect = _expect()
    dashboard = _open(page, site, "/")
    dashboard.locator("#playground-operation").select_option("multiply")
    form = dashboard.locator("#playground-form")
    form.locator("textarea[name=body]").fill('{"a": 6, "b": 7}')
    form.get_by_role("button", name="Send").click()
    expect(form.locator(".exchange-status")).to_have_attribute("data-status", "200")
    expect(form.locator(".exchange-request")).to_contain_text("POST /v1/multiply HTTP/1.1")
    expect(form.locator(".exchange-request")).to_contain_text("content-type: application/json")
    expect(form.locator(".exchange-headers")).to_contain_text("content-type: application/json")
    expect(form.locator(".exchange-body")).to_have_text("42")
    expect(form.locator(".latency")).to_contain_text(re.compile(r"\d+\.\d ms"))


def test_catalog_try_button_opens_the_playground(page: Any, site: RunningNode) -> None:
    """'try' on a catalog row selects that method in the playground."""
    expect = _expect()
    dashboard = _open(page, site, "/")
    dashboard.locator('tr[data-target="list_products"] button.try').click()
    expect(dashboard.locator("#playground-operation")).to_have_value("list_products")
    dashboard.locator("#playground-form").get_by_role("button", name="Send").click()
    body = dashboard.locator("#playground-form .exchange-body")
    expect(body).to_contain_text("Mechanical keyboard")


def test_dashboard_shows_the_queues_and_redrives_dead_letters(page: Any, site: RunningNode) -> None:
    """The queues panel counts each queue's messages; a dead letter gets a redrive button
    that makes it ready again (here it dies again: there is no order 424242)."""
    import httpx

    expect = _expect()
    dashboard = _open(page, site, "/")
    panel = dashboard.locator("#queues-panel")
    expect(panel).to_be_visible()
    expect(panel.locator('tr[data-queue="payments"]')).to_be_visible()
    expect(panel.locator('tr[data-queue="notifications"]')).to_be_visible()
    expect(dashboard.locator("#queues-status")).to_have_text("broker: sqlite")
    sent = httpx.post(f"{site.url}/v1/queues/payments", json={"order_id": 424242})
    assert sent.status_code == 202
    row = panel.locator('tr[data-queue="payments"]')
    button = row.locator("button", has_text="redrive")
    expect(button).to_be_visible(timeout=20_000)  # three attempts, then a dead letter
    button.click()
    expect(dashboard.locator("#queues-note")).to_have_text("1 dead letter(s) of payments redriven")
