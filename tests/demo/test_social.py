"""The demo's social platform: posts and comments of the shop's users, over REST and GraphQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyport.demo.shop import store
from polyport.testing import RunningNode

PROFILE_QUERY = """
{ user(id: 1) { name posts(limit: 5) { title comments(limit: 3) { author { name } text } } } }
"""


@pytest.fixture
def client(demo: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=10) as c:
        yield c


class QueryLog:
    """The SQL statements the demo's store runs, while recording (sqlite3's trace hook)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()
        self._on = False

    def __call__(self, sql: str) -> None:
        with self._lock:
            if self._on:
                self.statements.append(sql)

    def reading(self, table: str) -> list[str]:
        return [
            s for s in self.statements if s.lstrip().upper().startswith("SELECT") and table in s
        ]

    def __enter__(self) -> QueryLog:
        self.statements.clear()
        self._on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._on = False


@pytest.fixture
def queries(demo: RunningNode) -> Iterator[QueryLog]:
    log = QueryLog()
    store.db.set_trace_callback(log)
    yield log
    store.db.set_trace_callback(None)


def _community(client: httpx.Client, people: int, posts_each: int) -> list[int]:
    """``people`` new users, each with ``posts_each`` posts, each post with two comments."""
    ids = []
    for n in range(people):
        user = client.post("/v1/users", json={"name": f"User {n}", "email": f"u{n}@example.com"})
        assert user.status_code == 201, user.text
        ids.append(user.json()["id"])
    for user_id in ids:
        for p in range(posts_each):
            post = client.post("/v1/posts", json={"user_id": user_id, "title": f"Post {p}"})
            assert post.status_code == 201, post.text
            for commenter in (1, 2):
                comment = client.post(
                    "/v1/comments",
                    json={"post_id": post.json()["id"], "user_id": commenter, "text": "Nice"},
                )
                assert comment.status_code == 201, comment.text
    return ids


# -- REST ------------------------------------------------------------------------------------


def test_the_seeded_profile_with_posts_and_comments_in_one_rest_call(client: httpx.Client) -> None:
    """``?expand=posts.comments.author`` answers the guide's profile query over REST."""
    user = client.get("/v1/users/1", params={"expand": "posts.comments.author"}).json()
    assert user["name"] == "Alice"
    titles = [p["title"] for p in user["posts"]]
    assert titles == ["REST or GraphQL?", "Getting Started with GraphQL"]  # newest first
    first = user["posts"][1]["comments"]
    assert [(c["author"]["name"], c["text"]) for c in first] == [
        ("Bob", "Great post!"),
        ("Alice", "Thanks for sharing"),
    ]
    post = client.get("/v1/posts/3", params={"expand": "author,comments"}).json()
    assert post["author"]["name"] == "Bob" and post["comments"][0]["user_id"] == 1


def test_posts_and_comments_are_resources_that_publish_created_events(
    client: httpx.Client,
) -> None:
    """Create, read, list by parent, update and delete; each create lands in the event log."""
    start = client.get("/v1/events", params={"channel": "posts/#", "after": "now"}).json()["next"]
    post = client.post("/v1/posts", json={"user_id": 2, "title": "Hello", "body": "First!"})
    assert post.status_code == 201 and post.headers["location"].endswith(f"/{post.json()['id']}")
    post_id = post.json()["id"]
    comment = client.post(
        "/v1/comments", json={"post_id": post_id, "user_id": 1, "text": "Welcome"}
    ).json()
    assert client.get(f"/v1/comments/{comment['id']}").json()["text"] == "Welcome"
    assert [c["id"] for c in client.get(f"/v1/comments?post_id={post_id}").json()["items"]] == [
        comment["id"]
    ]
    assert [p["title"] for p in client.get("/v1/posts?user_id=2").json()["items"]] == [
        "Real-time chat over WebSocket",
        "Hello",
    ]
    updated = client.put(f"/v1/posts/{post_id}", json={"title": "Hello, world"})
    assert updated.status_code == 200 and updated.json()["body"] == ""

    events = client.get("/v1/events", params={"channel": "posts/#", "after": start}).json()
    assert [(e["type"], e["data"]["id"]) for e in events["events"]] == [
        ("posts.created", post_id),
        ("posts.updated", post_id),
    ]
    created = client.get(
        "/v1/events", params={"channel": "comments/created", "after": "earliest"}
    ).json()
    assert created["events"][-1]["data"]["text"] == "Welcome"

    assert client.delete(f"/v1/posts/{post_id}").status_code == 204
    assert client.get(f"/v1/posts/{post_id}").status_code == 404
    assert client.get(f"/v1/comments/{comment['id']}").status_code == 404  # went with its post


def test_bad_input_is_refused_and_changes_nothing(client: httpx.Client) -> None:
    """Unknown users and posts are 404s, invalid fields 422s, and no row is written."""
    before = client.get("/v1/posts").json()["items"]
    assert client.post("/v1/posts", json={"user_id": 99, "title": "x"}).status_code == 404
    assert client.post("/v1/posts", json={"user_id": 1, "title": ""}).status_code == 422
    assert client.post("/v1/posts", json={"user_id": 1}).status_code == 422
    missing_post = client.post("/v1/comments", json={"post_id": 99, "user_id": 1, "text": "x"})
    assert missing_post.status_code == 404 and missing_post.json()["code"] == "NOT_FOUND"
    assert (
        client.post("/v1/comments", json={"post_id": 1, "user_id": 1, "text": ""}).status_code
        == 422
    )
    assert client.get("/v1/users/1", params={"expand": "posts.nope"}).status_code == 422
    assert client.get("/v1/posts").json()["items"] == before


def test_expand_reads_one_query_per_level_for_many_users(
    client: httpx.Client, queries: QueryLog
) -> None:
    """Twelve users, their posts, the posts' comments and authors: one SELECT per level."""
    ids = _community(client, people=12, posts_each=3)
    with queries:
        page = client.get(
            "/v1/users", params={"limit": 20, "expand": "posts.comments.author"}
        ).json()["items"]
    by_id = {u["id"]: u for u in page}
    assert all(len(by_id[i]["posts"]) == 3 for i in ids)
    assert all(
        [c["author"]["name"] for c in p["comments"]] == ["Alice", "Bob"]
        for i in ids
        for p in by_id[i]["posts"]
    )
    assert len(queries.reading("social_posts")) == 1
    assert len(queries.reading("social_comments")) == 1
    assert len(queries.reading("shop_users")) == 2  # the page itself, then the authors


# -- GraphQL (the edge at /graphql) ----------------------------------------------------------


def _graphql(client: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    answer = client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"accept": "application/graphql-response+json"},
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    assert "errors" not in result, result
    return result["data"]  # type: ignore[no-any-return]


def test_the_guides_profile_query_over_graphql(client: httpx.Client) -> None:
    """User profile + posts + comments with their authors, in one GraphQL request."""
    data = _graphql(client, PROFILE_QUERY)
    assert data == {
        "user": {
            "name": "Alice",
            "posts": [
                {
                    "title": "REST or GraphQL?",
                    "comments": [{"author": {"name": "Bob"}, "text": "Why not both?"}],
                },
                {
                    "title": "Getting Started with GraphQL",
                    "comments": [
                        {"author": {"name": "Bob"}, "text": "Great post!"},
                        {"author": {"name": "Alice"}, "text": "Thanks for sharing"},
                    ],
                },
            ],
        }
    }
    limited = _graphql(
        client, "{ user(id: 1) { posts(limit: 1) { id comments(limit: 1) { id } } } }"
    )
    shape = [
        (str(p["id"]), [str(c["id"]) for c in p["comments"]]) for p in limited["user"]["posts"]
    ]
    assert shape == [("2", ["3"])]  # the newest post, its first comment


def test_graphql_mutations_create_posts_and_comments(client: httpx.Client) -> None:
    """createPost and createComment write through the same handlers as REST."""
    post = _graphql(
        client,
        "mutation($t: String!) { createPost(userId: 2, title: $t) { id title author { name } } }",
        t="Via GraphQL",
    )["createPost"]
    assert post["author"] == {"name": "Bob"}
    assert post["title"] == "Via GraphQL"
    rest = client.get(f"/v1/posts/{post['id']}").json()
    assert rest["user_id"] == 2
    create = 'mutation { createComment(postId: POST, userId: 1, text: "Hi") { id postId } }'
    comment = _graphql(client, create.replace("POST", str(post["id"])))["createComment"]
    assert str(comment["postId"]) == str(post["id"])
    assert client.get(f"/v1/comments/{comment['id']}").json()["text"] == "Hi"


def test_graphql_reads_one_query_per_level_for_many_users(
    client: httpx.Client, queries: QueryLog
) -> None:
    """The nested GraphQL selection over many users costs one SELECT per relation level."""
    ids = _community(client, people=12, posts_each=3)
    with queries:
        data = _graphql(
            client,
            "{ users(first: 20) { edges { node { id posts(limit: 5) "
            "{ title author { name } comments(limit: 3) { author { name } text } } } } } }",
        )
    nodes = {int(e["node"]["id"]): e["node"] for e in data["users"]["edges"]}
    assert all(len(nodes[i]["posts"]) == 3 for i in ids)
    assert all(
        p["author"]["name"] == f"User {n}" for n, i in enumerate(ids) for p in nodes[i]["posts"]
    )
    assert len(queries.reading("social_posts")) == 1
    assert len(queries.reading("social_comments")) == 1
    # the users page, the posts' authors, the comments' authors
    assert len(queries.reading("shop_users")) == 3


async def test_a_graphql_subscription_sees_posts_created_over_rest(demo: RunningNode) -> None:
    """The gql client subscribes over graphql-transport-ws; a post made over REST arrives,
    its author resolved through the relation."""
    from gql import Client, gql
    from gql.transport.websockets import WebsocketsTransport

    transport = WebsocketsTransport(
        url=demo.url.replace("http://", "ws://") + "/graphql",
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    # From the start of the log (this node's is fresh), so the post cannot be missed
    # however long the subscription takes to start.
    subscription = gql(
        'subscription { postsCreated(after: "earliest") { type data { title author { name } } } }'
    )

    async def publish_one() -> None:
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=demo.url, timeout=10) as rest:
            answer = await rest.post("/v1/posts", json={"user_id": 2, "title": "Live"})
            assert answer.status_code == 201

    async def first_event() -> dict[str, Any]:
        async with Client(transport=transport) as session:
            publishing = asyncio.create_task(publish_one())
            try:
                async for result in session.subscribe(subscription):
                    await publishing
                    return dict(result)
            finally:
                publishing.cancel()
        raise AssertionError("the subscription ended without an event")

    event = await asyncio.wait_for(first_event(), 15)
    assert event == {
        "postsCreated": {
            "type": "posts.created",
            "data": {"title": "Live", "author": {"name": "Bob"}},
        }
    }
